//! CLIP's two encoders with OpenAI's parameter names (Radford et al., 2021; openai/CLIP
//! `model.py`): a vision transformer returning every token and a causal text transformer.
use super::layers::{BiasInit, Transformer};
use tch::nn;
use tch::Tensor;

/// Sizes of the dual encoder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipConfig {
    pub embed_dim: i64,
    /// Input image (H, W).
    pub image_size: (i64, i64),
    pub vision_width: i64,
    pub vision_layers: i64,
    pub vision_heads: i64,
    pub patch_size: i64,
    pub stride: i64,
    pub context_length: i64,
    pub vocab_size: i64,
    pub text_width: i64,
    pub text_heads: i64,
    pub text_layers: i64,
}

impl ClipConfig {
    /// OpenAI's CLIP ViT-B/16 (512-wide joint space, 12 x 768 vision, 12 x 512 text, 77 tokens,
    /// CLIP's 49,408-token vocabulary) at input size `image_size` (H, W) with patch stride 16.
    pub fn vit_b16(image_size: (i64, i64)) -> ClipConfig {
        ClipConfig {
            embed_dim: 512,
            image_size,
            vision_width: 768,
            vision_layers: 12,
            vision_heads: 12,
            patch_size: 16,
            stride: 16,
            context_length: 77,
            vocab_size: 49408,
            text_width: 512,
            text_heads: 8,
            text_layers: 12,
        }
    }

    /// Patch grid (rows, cols) of the configured image size and stride.
    pub fn grid(&self) -> (i64, i64) {
        (
            (self.image_size.0 - self.patch_size) / self.stride + 1,
            (self.image_size.1 - self.patch_size) / self.stride + 1,
        )
    }
}

/// `visual.*`: patch conv, class token, positional embedding, `ln_pre`, blocks, `ln_post`, `proj`.
#[derive(Debug)]
pub struct VisionTransformer {
    conv1: nn::Conv2D,
    class_embedding: Tensor,
    positional_embedding: Tensor,
    ln_pre: nn::LayerNorm,
    transformer: Transformer,
    ln_post: nn::LayerNorm,
    proj: Tensor,
}

impl VisionTransformer {
    pub fn new(vs: nn::Path, c: &ClipConfig) -> VisionTransformer {
        let w = c.vision_width;
        let scale = (w as f64).powf(-0.5);
        let (gh, gw) = c.grid();
        let conv = nn::ConvConfig {
            stride: c.stride,
            bias: false,
            ..Default::default()
        };
        VisionTransformer {
            conv1: nn::conv2d(&vs / "conv1", 3, w, c.patch_size, conv),
            class_embedding: vs.var(
                "class_embedding",
                &[w],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: scale,
                },
            ),
            positional_embedding: vs.var(
                "positional_embedding",
                &[gh * gw + 1, w],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: scale,
                },
            ),
            ln_pre: nn::layer_norm(&vs / "ln_pre", vec![w], Default::default()),
            transformer: Transformer::new(
                &vs / "transformer",
                w,
                c.vision_layers,
                c.vision_heads,
                BiasInit::Zero,
            ),
            ln_post: nn::layer_norm(&vs / "ln_post", vec![w], Default::default()),
            proj: vs.var(
                "proj",
                &[w, c.embed_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: scale,
                },
            ),
        }
    }

    /// Images [B, 3, H, W] -> tokens [B, 1 + patches, embed_dim] (`ln_post` on all tokens).
    pub fn forward(&self, images: &Tensor) -> Tensor {
        let x = self.transformer.forward(&self.embed(images), false);
        project(&x.apply(&self.ln_post), &self.proj)
    }

    /// [`VisionTransformer::forward`] and the last layer's attention weights averaged over heads:
    /// images [B, 3, H, W] -> (tokens [B, N, embed_dim], weights [B, N, N] f32 without gradient),
    /// N = 1 + patches.
    pub fn forward_with_attention(&self, images: &Tensor) -> (Tensor, Tensor) {
        let (x, weights) = self
            .transformer
            .forward_with_attention(&self.embed(images), false);
        (project(&x.apply(&self.ln_post), &self.proj), weights)
    }

    /// Images [B, 3, H, W] -> the transformer's input [B, 1 + patches, W] (`ln_pre` applied).
    fn embed(&self, images: &Tensor) -> Tensor {
        let x = images.to_kind(self.conv1.ws.kind()).apply(&self.conv1); // [B, W, gh, gw]
        let (b, w) = (x.size()[0], x.size()[1]);
        let x = x.reshape([b, w, -1]).transpose(1, 2); // [B, N, W]
        let cls = self
            .class_embedding
            .to_kind(x.kind())
            .view([1, 1, w])
            .expand([b, 1, w], false);
        let x = Tensor::cat(&[cls, x], 1) + &self.positional_embedding;
        x.apply(&self.ln_pre)
    }
}

/// The text side: `token_embedding`, `positional_embedding`, `transformer`, `ln_final`,
/// `text_projection` (names at the top level of CLIP, as OpenAI has them).
#[derive(Debug)]
pub struct TextTransformer {
    token_embedding: nn::Embedding,
    positional_embedding: Tensor,
    transformer: Transformer,
    ln_final: nn::LayerNorm,
    text_projection: Tensor,
}

impl TextTransformer {
    pub fn new(vs: nn::Path, c: &ClipConfig) -> TextTransformer {
        let w = c.text_width;
        let emb = nn::EmbeddingConfig {
            ws_init: nn::Init::Randn {
                mean: 0.0,
                stdev: 0.02,
            },
            ..Default::default()
        };
        TextTransformer {
            token_embedding: nn::embedding(&vs / "token_embedding", c.vocab_size, w, emb),
            positional_embedding: vs.var(
                "positional_embedding",
                &[c.context_length, w],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.01,
                },
            ),
            transformer: Transformer::new(
                &vs / "transformer",
                w,
                c.text_layers,
                c.text_heads,
                BiasInit::Zero,
            ),
            ln_final: nn::layer_norm(&vs / "ln_final", vec![w], Default::default()),
            text_projection: vs.var(
                "text_projection",
                &[w, c.embed_dim],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: (w as f64).powf(-0.5),
                },
            ),
        }
    }

    /// Token ids [B, L] i64 -> tokens [B, L, embed_dim] (causal attention).
    pub fn forward(&self, ids: &Tensor) -> Tensor {
        let x = self.transformer.forward(&self.embed(ids), true);
        project(&x.apply(&self.ln_final), &self.text_projection)
    }

    /// [`TextTransformer::forward`] and the last layer's attention weights averaged over heads:
    /// ids [B, L] -> (tokens [B, L, embed_dim], weights [B, L, L] f32 without gradient).
    pub fn forward_with_attention(&self, ids: &Tensor) -> (Tensor, Tensor) {
        let (x, weights) = self
            .transformer
            .forward_with_attention(&self.embed(ids), true);
        (
            project(&x.apply(&self.ln_final), &self.text_projection),
            weights,
        )
    }

    /// Token ids [B, L] -> the transformer's input [B, L, W].
    fn embed(&self, ids: &Tensor) -> Tensor {
        let l = ids.size()[1];
        ids.apply(&self.token_embedding) + self.positional_embedding.narrow(0, 0, l)
    }
}

/// `x @ proj` in at least fp32 even under autocast: the projections give the retrieval features.
fn project(x: &Tensor, proj: &Tensor) -> Tensor {
    use super::amp::{at_least_f32, full_precision};
    full_precision(|| at_least_f32(x).matmul(&at_least_f32(proj)))
}
