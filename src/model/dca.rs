//! CCMA's differential cross-modal attention (METHOD.md section 2, after the Differential
//! Transformer of Ye et al., 2024): each pair of heads attends twice and subtracts the second map,
//! weighted by a learned λ, to cancel attention that both maps put on misaligned context.
//!
//! Parameters of one block (`dca_image.{i}.` / `dca_text.{i}.`): `ln_q`, `ln_kv` (LayerNorms of
//! the queries X and the context Y), `q_proj`, `k_proj`, `v_proj`, `out_proj` (D x D with
//! biases), `lambda_q1`, `lambda_k1`, `lambda_q2`, `lambda_k2` (width d = D / heads), `subln`
//! (RMSNorm scale over 2d), `ln_2`, `mlp.c_fc`, `mlp.c_proj`.
use super::layers::{linear, quick_gelu, BiasInit};
use tch::nn;
use tch::{Kind, Tensor};

#[derive(Debug)]
pub struct DcaBlock {
    ln_q: nn::LayerNorm,
    ln_kv: nn::LayerNorm,
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    lambda: [Tensor; 4],
    subln: Tensor,
    ln_2: nn::LayerNorm,
    c_fc: nn::Linear,
    c_proj: nn::Linear,
    heads: i64,
    lambda_init: f64,
}

impl DcaBlock {
    pub fn new(vs: nn::Path, width: i64, heads: i64, lambda_init: f64) -> DcaBlock {
        let d = width / heads;
        let std = (width as f64).powf(-0.5);
        let fc_std = ((2 * width) as f64).powf(-0.5);
        let lam = |name: &str| {
            vs.var(
                name,
                &[d],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.1,
                },
            )
        };
        let ln = |name: &str| nn::layer_norm(&vs / name, vec![width], Default::default());
        DcaBlock {
            ln_q: ln("ln_q"),
            ln_kv: ln("ln_kv"),
            q_proj: linear(&vs / "q_proj", width, width, std, BiasInit::Torch),
            k_proj: linear(&vs / "k_proj", width, width, std, BiasInit::Torch),
            v_proj: linear(&vs / "v_proj", width, width, std, BiasInit::Torch),
            out_proj: linear(&vs / "out_proj", width, width, std, BiasInit::Torch),
            lambda: [
                lam("lambda_q1"),
                lam("lambda_k1"),
                lam("lambda_q2"),
                lam("lambda_k2"),
            ],
            subln: vs.var("subln", &[2 * d], nn::Init::Const(1.0)),
            ln_2: ln("ln_2"),
            c_fc: linear(
                &vs / "mlp" / "c_fc",
                width,
                4 * width,
                fc_std,
                BiasInit::Torch,
            ),
            c_proj: linear(
                &vs / "mlp" / "c_proj",
                4 * width,
                width,
                std,
                BiasInit::Torch,
            ),
            heads,
            lambda_init,
        }
    }

    /// Zeroes the last layer of both residual branches (attention's `out_proj`, the MLP's
    /// `c_proj`, weights and biases), so that the block starts as the identity.
    fn zero_residual(&self) {
        tch::no_grad(|| {
            let layers = [&self.out_proj, &self.c_proj];
            for t in layers
                .iter()
                .flat_map(|l| std::iter::once(&l.ws).chain(&l.bs))
            {
                let _ = t.shallow_clone().zero_();
            }
        });
    }

    /// λ = exp(λq1·λk1) − exp(λq2·λk2) + λ_init (a scalar tensor).
    pub fn lambda(&self) -> Tensor {
        let [q1, k1, q2, k2] = &self.lambda;
        (q1 * k1).sum(q1.kind()).exp() - (q2 * k2).sum(q2.kind()).exp() + self.lambda_init
    }

    /// Queries `x` [B, Nq, D] attend to context `y` [B, Nk, D]; `mask` is an additive
    /// [B, 1, 1, Nk] key mask (0 or -inf) or none. Returns [B, Nq, D].
    pub fn forward(&self, x: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let (b, nq, dim) = x.size3().expect("[B, Nq, D]");
        let nk = y.size()[1];
        let (h, d) = (self.heads, dim / self.heads);
        let (xq, yk) = (x.apply(&self.ln_q), y.apply(&self.ln_kv));
        // Heads 2j and 2j+1 form differential head j: Q1/K1 are the even heads, Q2/K2 the odd ones.
        let q = xq
            .apply(&self.q_proj)
            .view([b, nq, h / 2, 2, d])
            .permute([3, 0, 2, 1, 4]); // [2, B, h/2, Nq, d]
        let k = yk
            .apply(&self.k_proj)
            .view([b, nk, h / 2, 2, d])
            .permute([3, 0, 2, 1, 4]);
        let v = yk
            .apply(&self.v_proj)
            .view([b, nk, h / 2, 2 * d])
            .transpose(1, 2); // [B, h/2, Nk, 2d]

        // The two attention maps and their difference, (A1 − λ A2) V [B, h/2, Nq, 2d], run in at
        // least fp32 even under autocast: the difference cancels most of each map.
        let o = super::amp::full_precision(|| {
            let wide = super::amp::at_least_f32;
            let (q, k, v) = (wide(&q), wide(&k), wide(&v));
            let mask = mask.map(|m| m.to_kind(q.kind()));
            let scale = (d as f64).powf(-0.5);
            let attend = |i: i64| {
                Tensor::scaled_dot_product_attention(
                    &q.get(i),
                    &k.get(i),
                    &v,
                    mask.as_ref(),
                    0.0,
                    false,
                    scale,
                    false,
                )
            };
            attend(0) - attend(1) * self.lambda().to_kind(q.kind())
        });
        let rms = (o.square().mean_dim([-1i64].as_slice(), true, o.kind()) + 1e-5).rsqrt();
        let o = (o * rms * &self.subln * (1.0 - self.lambda_init)).to_kind(x.kind());
        let o = o
            .transpose(1, 2)
            .reshape([b, nq, dim])
            .apply(&self.out_proj);
        let x = x + o;
        let m = quick_gelu(&x.apply(&self.ln_2).apply(&self.c_fc)).apply(&self.c_proj);
        x + m
    }
}

/// `depth` DCA blocks applied in turn, each attending to the same context.
#[derive(Debug)]
pub struct DcaStack {
    blocks: Vec<DcaBlock>,
}

impl DcaStack {
    pub fn new(vs: nn::Path, width: i64, heads: i64, depth: i64, lambda_init: f64) -> DcaStack {
        DcaStack {
            blocks: (0..depth)
                .map(|i| DcaBlock::new(&vs / i, width, heads, lambda_init))
                .collect(),
        }
    }

    /// Starts every block as the identity ([`DcaBlock::zero_residual`]): the stack then passes
    /// its queries through unchanged until training moves the branches.
    pub fn zero_residual(&self) {
        self.blocks.iter().for_each(DcaBlock::zero_residual);
    }

    /// [B, Nq, D] over [B, Nk, D] -> [B, Nq, D].
    pub fn forward(&self, x: &Tensor, y: &Tensor, mask: Option<&Tensor>) -> Tensor {
        self.blocks
            .iter()
            .fold(x.shallow_clone(), |x, blk| blk.forward(&x, y, mask))
    }
}

/// Additive key mask for text context: 0 up to and including the EOT position, -inf after.
/// `ids` [B, L] i64 -> [B, 1, 1, L] f32.
pub fn text_padding_mask(ids: &Tensor) -> Tensor {
    let l = ids.size()[1];
    let eot = ids.argmax(-1, true); // [B, 1]
    let pos = Tensor::arange(l, (Kind::Int64, ids.device())).unsqueeze(0);
    let pad = pos.gt_tensor(&eot);
    Tensor::zeros(pad.size(), (Kind::Float, ids.device()))
        .masked_fill(&pad, f64::NEG_INFINITY)
        .view([-1, 1, 1, l])
}
