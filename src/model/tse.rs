//! RDE's token selection embedding (TSE; METHOD.md section 7): a second image-text embedding
//! pair built from the tokens the last encoder layer attends to most.
//!
//! Parameters, under RDE's names (`visul_emb_layer.*` for the image, `texual_emb_layer.*` for
//! the text): the skip projection (`fc` for the image, `linear` for the text) D -> 2D, and
//! `mlp.layers.0` (D -> D), `mlp.bns.0` (BatchNorm over D), `mlp.layers.1` (D -> 2D), with
//! D = `embed_dim` (512 at ViT-B/16, so 1024-d outputs). RDE also registers an image `linear`
//! and a second BatchNorm `mlp.bns.1` that its forward never uses; they are not built here.
use super::layers::{gather_rows, l2_normalize};
use super::Module;
use tch::nn;
use tch::{Kind, Tensor};

/// Which statistics the TSE BatchNorm normalises with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchNormMode {
    /// The running statistics, left unchanged (PyTorch's eval mode): retrieval, and training as
    /// RDE's published runs did.
    #[default]
    Running,
    /// The batch's statistics, updating the running ones (PyTorch's train mode).
    Batch,
}

/// How many of `tokens` positions (those after the first `skip`) TSE selects: ⌊(tokens − skip)·ρ⌋,
/// at least one.
pub fn selected(tokens: i64, skip: i64, ratio: f64) -> i64 {
    (((tokens - skip) as f64 * ratio).floor() as i64).max(1)
}

/// `Linear(D, D) -> BatchNorm1d(D) -> ReLU -> Linear(D, 2D)` over rows.
#[derive(Debug)]
struct Mlp {
    first: nn::Linear,
    norm: nn::BatchNorm,
    second: nn::Linear,
}

/// A linear layer [o, i] as `torch.nn.Linear` starts one: weight and bias U(−1/√i, 1/√i).
fn torch_linear(vs: nn::Path, i: i64, o: i64) -> nn::Linear {
    let bound = 1.0 / (i as f64).sqrt();
    let init = nn::Init::Uniform {
        lo: -bound,
        up: bound,
    };
    let cfg = nn::LinearConfig {
        ws_init: init,
        bs_init: Some(init),
        bias: true,
    };
    nn::linear(vs, i, o, cfg)
}

impl Mlp {
    fn new(vs: nn::Path, d: i64) -> Mlp {
        let bn = nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.0),
            bs_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        Mlp {
            first: torch_linear(&vs / "layers" / 0, d, d),
            norm: nn::batch_norm1d(&vs / "bns" / 0, d, bn),
            second: torch_linear(&vs / "layers" / 1, d, 2 * d),
        }
    }

    /// [R, D] -> [R, 2D].
    fn forward(&self, x: &Tensor, mode: BatchNormMode) -> Tensor {
        let train = mode == BatchNormMode::Batch;
        x.apply(&self.first)
            .apply_t(&self.norm, train)
            .relu()
            .apply(&self.second)
    }
}

/// One side's layer: `h = skip(x) + MLP(x)` on the selected, L2-normalised tokens.
#[derive(Debug)]
struct Side {
    skip: nn::Linear,
    mlp: Mlp,
}

impl Side {
    fn new(vs: nn::Path, skip: &str, d: i64) -> Side {
        Side {
            skip: torch_linear(&vs / skip, d, 2 * d),
            mlp: Mlp::new(&vs / "mlp", d),
        }
    }

    /// The tokens at `picked` [B, k] of `tokens` [B, N, D], L2-normalised, through the layer:
    /// [B, k, 2D].
    fn embed(&self, tokens: &Tensor, picked: &Tensor, mode: BatchNormMode) -> Tensor {
        let (b, k) = picked.size2().expect("[B, k]");
        let d = tokens.size()[2];
        let index = picked.unsqueeze(-1).expand([b, k, d], false);
        let x = l2_normalize(&tokens.gather(1, &index, false)).reshape([b * k, d]);
        let h = x.apply(&self.skip) + self.mlp.forward(&x, mode);
        h.reshape([b, k, 2 * d])
    }
}

/// The image and text TSE layers.
#[derive(Debug)]
pub struct TokenSelection {
    image: Side,
    text: Side,
    ratio: f64,
}

impl TokenSelection {
    /// Creates both layers under their modules' names for tokens of width `d`, selecting the
    /// fraction `ratio` (`select_ratio`) of the tokens.
    pub fn new(vs: &nn::Path, d: i64, ratio: f64) -> TokenSelection {
        TokenSelection {
            image: Side::new(vs / Module::TseImage.name(), "fc", d),
            text: Side::new(vs / Module::TseText.name(), "linear", d),
            ratio,
        }
    }

    /// Image TSE features [B, 2D] from the image tokens [B, N, D] (class token first) and the
    /// last layer's attention weights [B, N, N]: the k = ⌊(N − 1)·ρ⌋ tokens the class token
    /// attends to most (never itself), max-pooled after the layer.
    pub fn image(&self, tokens: &Tensor, attention: &Tensor, mode: BatchNormMode) -> Tensor {
        let n = attention.size()[1];
        let k = selected(n, 1, self.ratio);
        let row = attention.select(1, 0).to_kind(Kind::Float);
        let row = row.index_fill(1, &Tensor::from(0i64).to_device(row.device()), -1.0);
        let picked = row.topk(k, -1, true, true).1;
        self.image
            .embed(tokens, &picked, mode)
            .amax([1i64].as_slice(), false)
    }

    /// Text TSE features [B, 2D] from the text tokens [B, L, D], the caption ids [B, L] (SOT
    /// first, EOT the largest id, padding 0) and the last layer's attention weights [B, L, L]:
    /// the k = ⌊(L − 2)·ρ⌋ tokens the EOT position attends to most, SOT and EOT last and padding
    /// at 0 (so words first), max-pooled over the first min(words, k) after the layer. A caption
    /// with no word tokens gets the zero vector (RDE's pooling over no tokens gives NaN).
    pub fn text(
        &self,
        tokens: &Tensor,
        ids: &Tensor,
        attention: &Tensor,
        mode: BatchNormMode,
    ) -> Tensor {
        let (b, l) = ids.size2().expect("[B, L]");
        let device = ids.device();
        let k = selected(l, 2, self.ratio);
        let eot = super::layers::eot_index(ids);
        let present = ids.ne(0);
        let row = gather_rows(&attention.to_kind(Kind::Float), &eot)
            .scatter_value(1, &eot.unsqueeze(1), -1.0)
            .index_fill(1, &Tensor::from(0i64).to_device(device), -1.0)
            * present.to_kind(Kind::Float);
        let picked = row.topk(k, -1, true, true).1;
        let h = self.text.embed(tokens, &picked, mode);
        // Words among the selected: the caption's non-zero tokens less SOT and EOT, at most k.
        let words =
            (present.sum_dim_intlist([1i64].as_slice(), false, Kind::Int64) - 2).clamp(0, k);
        let position = Tensor::arange(k, (Kind::Int64, device)).unsqueeze(0);
        let outside = position.ge_tensor(&words.unsqueeze(1)).unsqueeze(-1); // [B, k, 1]
        let pooled = h
            .masked_fill(&outside, f64::NEG_INFINITY)
            .amax([1i64].as_slice(), false);
        let any = words
            .gt(0)
            .unsqueeze(1)
            .expand([b, pooled.size()[1]], false);
        pooled.where_self(&any, &pooled.zeros_like())
    }
}
