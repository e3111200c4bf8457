//! Building blocks shared by the encoders and the cross-modal parts: QuickGELU MLP, packed-QKV
//! multi-head attention over libtorch's fused scaled-dot-product attention, pre-LN residual blocks.
use tch::nn;
use tch::{Kind, Tensor};

/// `x * sigmoid(1.702 x)`, CLIP's activation.
pub fn quick_gelu(x: &Tensor) -> Tensor {
    x * (x * 1.702).sigmoid()
}

/// How a fresh linear layer's bias starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasInit {
    /// Zero: ccma's CLIP towers trained from scratch, and attention projections (as
    /// `torch.nn.MultiheadAttention` zeroes them).
    Zero,
    /// As `torch.nn.Linear` leaves it, U(-1/√fan_in, 1/√fan_in): the modules IRRA and CCMA add,
    /// whose weights alone IRRA re-initialises.
    Torch,
}

/// A fresh linear layer [o, i]: weight ~ N(0, `std`), bias as `bias` says.
pub fn linear(vs: nn::Path, i: i64, o: i64, std: f64, bias: BiasInit) -> nn::Linear {
    let bound = 1.0 / (i as f64).sqrt();
    let bs_init = match bias {
        BiasInit::Zero => nn::Init::Const(0.0),
        BiasInit::Torch => nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    };
    let ws_init = nn::Init::Randn {
        mean: 0.0,
        stdev: std,
    };
    let cfg = nn::LinearConfig {
        ws_init,
        bs_init: Some(bs_init),
        bias: true,
    };
    nn::linear(vs, i, o, cfg)
}

/// `torch.nn.MultiheadAttention` parameters (`in_proj_weight` [3D, D], `in_proj_bias` [3D],
/// `out_proj`) with attention computed by the fused kernel.
#[derive(Debug)]
pub struct Attention {
    in_proj_weight: Tensor,
    in_proj_bias: Tensor,
    out_proj: nn::Linear,
    heads: i64,
}

impl Attention {
    pub fn new(vs: nn::Path, width: i64, heads: i64, attn_std: f64, proj_std: f64) -> Attention {
        Attention {
            in_proj_weight: vs.var(
                "in_proj_weight",
                &[3 * width, width],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: attn_std,
                },
            ),
            in_proj_bias: vs.var("in_proj_bias", &[3 * width], nn::Init::Const(0.0)),
            // `torch.nn.MultiheadAttention` zeroes its projection biases.
            out_proj: linear(&vs / "out_proj", width, width, proj_std, BiasInit::Zero),
            heads,
        }
    }

    /// [B, N, D] -> [B, heads, N, D/heads].
    fn split(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().expect("[B, N, D]");
        x.view([b, n, self.heads, d / self.heads]).transpose(1, 2)
    }

    /// Self-attention of `x` [B, N, D] (causal when asked) -> [B, N, D].
    pub fn self_attn(&self, x: &Tensor, causal: bool) -> Tensor {
        let qkv = x
            .linear(&self.in_proj_weight, Some(&self.in_proj_bias))
            .chunk(3, -1);
        self.attend(&qkv[0], &qkv[1], &qkv[2], None, causal)
    }

    /// Attention of queries `q` [B, Nq, D] over `kv` [B, Nk, D] -> [B, Nq, D]; `mask` is an
    /// additive [B, 1, 1, Nk] mask (0 or -inf) or none.
    pub fn cross_attn(&self, q: &Tensor, kv: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let w = self.in_proj_weight.chunk(3, 0);
        let b = self.in_proj_bias.chunk(3, 0);
        let q = q.linear(&w[0], Some(&b[0]));
        let kv = kv
            .linear(
                &Tensor::cat(&[&w[1], &w[2]], 0),
                Some(Tensor::cat(&[&b[1], &b[2]], 0)),
            )
            .chunk(2, -1);
        self.attend(&q, &kv[0], &kv[1], mask, false)
    }

    /// The attention weights of self-attention over `x` [B, N, D] (causal when asked), averaged
    /// over the heads, as `torch.nn.MultiheadAttention` returns them: [B, N, N] f32, no gradient
    /// (they only choose tokens).
    pub fn self_attn_weights(&self, x: &Tensor, causal: bool) -> Tensor {
        tch::no_grad(|| {
            let qkv = x
                .linear(&self.in_proj_weight, Some(&self.in_proj_bias))
                .to_kind(Kind::Float)
                .chunk(3, -1);
            let (q, k) = (self.split(&qkv[0]), self.split(&qkv[1]));
            let d = q.size()[3] as f64;
            let mut scores = q.matmul(&k.transpose(-2, -1)) * d.powf(-0.5);
            if causal {
                let n = scores.size()[3];
                let future = Tensor::ones([n, n], (Kind::Bool, x.device())).triu(1);
                scores = scores.masked_fill(&future, f64::NEG_INFINITY);
            }
            scores
                .softmax(-1, Kind::Float)
                .mean_dim([1i64].as_slice(), false, Kind::Float)
        })
    }

    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        causal: bool,
    ) -> Tensor {
        let (b, n, d) = q.size3().expect("[B, N, D]");
        let mask = mask.map(|m| m.to_kind(q.kind()));
        let o = Tensor::scaled_dot_product_attention(
            &self.split(q),
            &self.split(k),
            &self.split(v),
            mask,
            0.0,
            causal,
            None,
            false,
        );
        o.transpose(1, 2).reshape([b, n, d]).apply(&self.out_proj)
    }
}

/// Pre-LN residual block: `x + attn(ln_1 x)`, then `x + mlp(ln_2 x)` (MLP D -> 4D -> D, QuickGELU).
#[derive(Debug)]
pub struct ResidualBlock {
    pub attn: Attention,
    ln_1: nn::LayerNorm,
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    ln_2: nn::LayerNorm,
}

impl ResidualBlock {
    /// CLIP's initialisation: `attn_std = D^-1/2`, `proj_std = D^-1/2 (2 L)^-1/2`,
    /// `fc_std = (2D)^-1/2`; the MLP biases as `bias` says.
    pub fn new(vs: nn::Path, width: i64, heads: i64, layers: i64, bias: BiasInit) -> ResidualBlock {
        let attn_std = (width as f64).powf(-0.5);
        let proj_std = attn_std * ((2 * layers) as f64).powf(-0.5);
        let fc_std = ((2 * width) as f64).powf(-0.5);
        ResidualBlock {
            attn: Attention::new(&vs / "attn", width, heads, attn_std, proj_std),
            ln_1: nn::layer_norm(&vs / "ln_1", vec![width], Default::default()),
            c_fc: linear(&vs / "mlp" / "c_fc", width, 4 * width, fc_std, bias),
            c_proj: linear(&vs / "mlp" / "c_proj", 4 * width, width, proj_std, bias),
            ln_2: nn::layer_norm(&vs / "ln_2", vec![width], Default::default()),
        }
    }

    /// [B, N, D] -> [B, N, D].
    pub fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        self.forward_normed(x, &x.apply(&self.ln_1), causal)
    }

    /// [`ResidualBlock::forward`] and its attention weights averaged over heads: [B, N, D] ->
    /// ([B, N, D], [B, N, N] f32 without gradient).
    pub fn forward_with_attention(&self, x: &Tensor, causal: bool) -> (Tensor, Tensor) {
        let normed = x.apply(&self.ln_1);
        let weights = self.attn.self_attn_weights(&normed, causal);
        (self.forward_normed(x, &normed, causal), weights)
    }

    /// The block on `x` and its `ln_1(x)`.
    fn forward_normed(&self, x: &Tensor, normed: &Tensor, causal: bool) -> Tensor {
        let x = x + self.attn.self_attn(normed, causal);
        let h = quick_gelu(&x.apply(&self.ln_2).apply(&self.c_fc)).apply(&self.c_proj);
        x + h
    }
}

/// `resblocks.{i}` stack.
#[derive(Debug)]
pub struct Transformer {
    blocks: Vec<ResidualBlock>,
}

impl Transformer {
    pub fn new(vs: nn::Path, width: i64, layers: i64, heads: i64, bias: BiasInit) -> Transformer {
        let rb = &vs / "resblocks";
        Transformer {
            blocks: (0..layers)
                .map(|i| ResidualBlock::new(&rb / i, width, heads, layers, bias))
                .collect(),
        }
    }

    /// [B, N, D] -> [B, N, D].
    pub fn forward(&self, x: &Tensor, causal: bool) -> Tensor {
        self.blocks
            .iter()
            .fold(x.shallow_clone(), |x, b| b.forward(&x, causal))
    }

    /// [`Transformer::forward`] and the last block's attention weights averaged over heads:
    /// [B, N, D] -> ([B, N, D], [B, N, N] f32 without gradient).
    pub fn forward_with_attention(&self, x: &Tensor, causal: bool) -> (Tensor, Tensor) {
        let (last, first) = self.blocks.split_last().expect("at least one block");
        let x = first
            .iter()
            .fold(x.shallow_clone(), |x, b| b.forward(&x, causal));
        last.forward_with_attention(&x, causal)
    }
}

/// Index of the end-of-text token per caption: `argmax(ids)` of [B, L] i64 -> [B] i64.
pub fn eot_index(ids: &Tensor) -> Tensor {
    ids.argmax(-1, false)
}

/// Rows `x[b, idx[b]]` of [B, N, D] -> [B, D].
pub fn gather_rows(x: &Tensor, idx: &Tensor) -> Tensor {
    let b = x.size()[0];
    x.index(&[
        Some(Tensor::arange(b, (Kind::Int64, x.device()))),
        Some(idx.shallow_clone()),
    ])
}

/// Rows scaled to unit L2 norm, in f32: [.., D] -> [.., D] (a zero row stays zero).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    let x = x.to_kind(Kind::Float);
    &x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}
