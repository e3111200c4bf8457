//! IRRA's cross-modal branch (Jiang & Ye, CVPR 2023): masked caption tokens attend to the image
//! tokens, pass `cmt_depth` residual blocks, and an MLM head predicts the masked words.
use super::layers::{linear, quick_gelu, Attention, BiasInit, Transformer};
use super::Module;
use tch::nn;
use tch::Tensor;

/// `cross_attn`, `cross_modal_transformer`, `ln_pre_t`, `ln_pre_i`, `ln_post`, `mlm_head.{dense,ln,fc}`.
#[derive(Debug)]
pub struct CrossModal {
    cross_attn: Attention,
    transformer: Transformer,
    ln_pre_t: nn::LayerNorm,
    ln_pre_i: nn::LayerNorm,
    ln_post: nn::LayerNorm,
    dense: nn::Linear,
    ln: nn::LayerNorm,
    fc: nn::Linear,
}

impl CrossModal {
    /// IRRA's initialisation: attention `D^-1/2`, projections `D^-1/2 (2 depth)^-1/2`, MLP `(2D)^-1/2`.
    pub fn new(vs: &nn::Path, width: i64, depth: i64, vocab: i64) -> CrossModal {
        let heads = (width / 64).max(1);
        let scale = (width as f64).powf(-0.5);
        let proj_std = scale * ((2 * depth) as f64).powf(-0.5);
        let fc_std = ((2 * width) as f64).powf(-0.5);
        let ln = |m: Module| nn::layer_norm(vs / m.name(), vec![width], Default::default());
        CrossModal {
            cross_attn: Attention::new(
                vs / Module::CrossAttn.name(),
                width,
                heads,
                scale,
                proj_std,
            ),
            transformer: Transformer::new(
                vs / Module::CrossModalTransformer.name(),
                width,
                depth,
                heads,
                BiasInit::Torch,
            ),
            ln_pre_t: ln(Module::LnPreT),
            ln_pre_i: ln(Module::LnPreI),
            ln_post: ln(Module::LnPost),
            dense: linear(
                vs / Module::MlmHead.name() / "dense",
                width,
                width,
                fc_std,
                BiasInit::Torch,
            ),
            ln: nn::layer_norm(
                vs / Module::MlmHead.name() / "ln",
                vec![width],
                Default::default(),
            ),
            fc: linear(
                vs / Module::MlmHead.name() / "fc",
                width,
                vocab,
                proj_std,
                BiasInit::Torch,
            ),
        }
    }

    /// Masked-caption tokens [B, L, D] and image tokens [B, Ni, D] -> fused tokens [B, L, D].
    pub fn fuse(&self, text: &Tensor, image: &Tensor) -> Tensor {
        let kv = image.apply(&self.ln_pre_i);
        let x = self
            .cross_attn
            .cross_attn(&text.apply(&self.ln_pre_t), &kv, None);
        self.transformer.forward(&x, false).apply(&self.ln_post)
    }

    /// MLM logits of fused tokens [M, D] -> [M, vocab].
    pub fn mlm_logits(&self, x: &Tensor) -> Tensor {
        quick_gelu(&x.apply(&self.dense))
            .apply(&self.ln)
            .apply(&self.fc)
    }
}
