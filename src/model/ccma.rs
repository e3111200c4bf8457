//! The CCMA model: CLIP dual encoder, IRRA's cross-modal MLM branch, the ID classifier and the two
//! differential cross-modal attention stacks used by IMAL, and RDE's token selection embedding
//! layers when the model has them.
use super::clip::{TextTransformer, VisionTransformer};
use super::config::ModelConfig;
use super::cross_modal::CrossModal;
use super::dca::{text_padding_mask, DcaStack};
use super::layers::{eot_index, gather_rows};
use super::tse::{BatchNormMode, TokenSelection};
use super::Module;
use tch::nn;
use tch::{Kind, Tensor};

/// Which optional heads a training forward runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heads {
    /// The two DCA stacks (for IMAL).
    pub dca: bool,
    /// The ID classifier.
    pub id: bool,
    /// The TSE layers, when the model has them (`tse: true`); a model without them runs none.
    pub tse: bool,
    /// The statistics the TSE BatchNorm uses in this forward.
    pub tse_batchnorm: BatchNormMode,
}

impl Heads {
    /// These heads and those that produce the `kind` embeddings.
    pub fn with(self, kind: Embedding) -> Heads {
        match kind {
            Embedding::Global => self,
            Embedding::Dca => Heads { dca: true, ..self },
            Embedding::Tse => Heads { tse: true, ..self },
        }
    }
}

/// A pair of embeddings, image and text, [B, D] f32 each, that a training forward produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `f_i`, `f_t`: the global features (class token, EOT token); every forward runs them.
    Global,
    /// `g_i`, `g_t`: the DCA features (text-guided image, image-guided text), when the DCA heads
    /// run.
    Dca,
    /// The TSE features (RDE's token selection embeddings, [B, 2D]), when the model has the TSE
    /// layers and the TSE heads run.
    Tse,
}

impl Embedding {
    /// Every kind (a new one is added here too), in the order a step gathers and caches them.
    pub const ALL: &'static [Embedding] = &[Embedding::Global, Embedding::Dca, Embedding::Tse];
}

/// What one training forward produces for the losses (all f32).
#[derive(Debug)]
pub struct TrainOutputs {
    /// [B, D] global image features (class token).
    pub f_i: Tensor,
    /// [B, D] global text features (EOT token).
    pub f_t: Tensor,
    /// [B, D] text-guided image features from DCA (class token), when the DCA heads run.
    pub g_i: Option<Tensor>,
    /// [B, D] image-guided text features from DCA (EOT token), when the DCA heads run.
    pub g_t: Option<Tensor>,
    /// [B, 2D] image and text TSE features, when the model has the TSE layers and they run.
    pub tse_i: Option<Tensor>,
    pub tse_t: Option<Tensor>,
    /// [B, C] ID logits of `f_i` and `f_t`, when the ID head runs.
    pub id_logits_i: Option<Tensor>,
    pub id_logits_t: Option<Tensor>,
    /// [M, V] MLM logits at the M masked positions, and their labels [M] i64, when masked captions are given.
    pub mlm_logits: Option<Tensor>,
    pub mlm_labels: Option<Tensor>,
}

impl TrainOutputs {
    /// The `kind` pair `[image, text]`, [B, D] each, when the forward ran it.
    pub fn embedding(&self, kind: Embedding) -> Option<[&Tensor; 2]> {
        match kind {
            Embedding::Global => Some([&self.f_i, &self.f_t]),
            Embedding::Dca => Some([self.g_i.as_ref()?, self.g_t.as_ref()?]),
            Embedding::Tse => Some([self.tse_i.as_ref()?, self.tse_t.as_ref()?]),
        }
    }

    /// Every pair the forward ran, in [`Embedding::ALL`]'s order.
    pub fn embeddings(&self) -> impl Iterator<Item = (Embedding, [&Tensor; 2])> {
        Embedding::ALL
            .iter()
            .filter_map(|&kind| Some((kind, self.embedding(kind)?)))
    }
}

/// The MLM branch's input: masked caption ids [B, L] i64, the masked positions [M] i64 (indices
/// into the B·L tokens, row-major) and the original ids there [M] i64.
#[derive(Debug, Clone, Copy)]
pub struct Masked<'a> {
    pub ids: &'a Tensor,
    pub positions: &'a Tensor,
    pub labels: &'a Tensor,
}

#[derive(Debug)]
pub struct Ccma {
    pub config: ModelConfig,
    visual: VisionTransformer,
    text: TextTransformer,
    cross: CrossModal,
    classifier: nn::Linear,
    dca_image: DcaStack,
    dca_text: DcaStack,
    tse: Option<TokenSelection>,
    device: tch::Device,
}

impl Ccma {
    /// Creates every parameter under `vs`, each module under its [`Module::name`] (the names of
    /// IRRA's and CCMA's state dicts).
    pub fn new(vs: &nn::Path, cfg: &ModelConfig) -> Ccma {
        let c = &cfg.clip;
        let base = vs / Module::Backbone.name();
        let d = c.embed_dim;
        let classifier = nn::linear(
            vs / Module::Classifier.name(),
            d,
            cfg.num_classes,
            nn::LinearConfig {
                ws_init: nn::Init::Randn {
                    mean: 0.0,
                    stdev: 0.001,
                },
                bs_init: Some(nn::Init::Const(0.0)),
                bias: true,
            },
        );
        Ccma {
            config: cfg.clone(),
            visual: VisionTransformer::new(&base / "visual", c),
            text: TextTransformer::new(base, c),
            cross: CrossModal::new(vs, d, cfg.cmt_depth, c.vocab_size),
            classifier,
            dca_image: DcaStack::new(
                vs / Module::DcaImage.name(),
                d,
                cfg.dca_heads,
                cfg.dca_depth,
                cfg.lambda_init,
            ),
            dca_text: DcaStack::new(
                vs / Module::DcaText.name(),
                d,
                cfg.dca_heads,
                cfg.dca_depth,
                cfg.lambda_init,
            ),
            tse: cfg
                .tse
                .then(|| TokenSelection::new(vs, d, cfg.select_ratio)),
            device: vs.device(),
        }
    }

    /// Runs `f` under bf16 autocast on CUDA (fp32 master weights), plainly on the CPU. Each public
    /// entry point opens one region (a training forward one in all).
    fn amp<T>(&self, f: impl FnOnce() -> T) -> T {
        super::amp::autocast(self.device, f)
    }

    /// Starts both DCA stacks as the identity (`zero_init_residual`): `g_i = f_i` and `g_t = f_t`
    /// at initialisation, instead of IRRA-style random residual branches.
    pub fn zero_dca_residuals(&self) {
        self.dca_image.zero_residual();
        self.dca_text.zero_residual();
    }

    /// Images [B, 3, H, W] f32 -> image tokens [B, 1 + patches, D].
    pub fn encode_image(&self, images: &Tensor) -> Tensor {
        self.amp(|| self.visual.forward(images))
    }

    /// Token ids [B, L] i64 -> text tokens [B, L, D].
    pub fn encode_text(&self, ids: &Tensor) -> Tensor {
        self.amp(|| self.text.forward(ids))
    }

    /// Global image features `f_i` [B, D] for retrieval: f32 end to end (no autocast).
    pub fn image_features(&self, images: &Tensor) -> Tensor {
        self.visual
            .forward(images)
            .select(1, 0)
            .to_kind(Kind::Float)
    }

    /// Global text features `f_t` [B, D] for retrieval (the EOT token): f32 end to end.
    pub fn text_features(&self, ids: &Tensor) -> Tensor {
        gather_rows(&self.text.forward(ids), &eot_index(ids)).to_kind(Kind::Float)
    }

    /// Whether the model has the TSE layers.
    pub fn has_tse(&self) -> bool {
        self.tse.is_some()
    }

    /// Image TSE features [B, 2D] for retrieval (running BatchNorm statistics), f32; `None`
    /// for a model without the TSE layers.
    pub fn image_tse_features(&self, images: &Tensor) -> Option<Tensor> {
        let tse = self.tse.as_ref()?;
        let (tokens, attention) = self.visual.forward_with_attention(images);
        Some(
            tse.image(&tokens, &attention, BatchNormMode::Running)
                .to_kind(Kind::Float),
        )
    }

    /// Text TSE features [B, 2D] for retrieval (running BatchNorm statistics), f32; `None` for a
    /// model without the TSE layers.
    pub fn text_tse_features(&self, ids: &Tensor) -> Option<Tensor> {
        let tse = self.tse.as_ref()?;
        let (tokens, attention) = self.text.forward_with_attention(ids);
        Some(
            tse.text(&tokens, ids, &attention, BatchNormMode::Running)
                .to_kind(Kind::Float),
        )
    }

    /// MLM logits [M, V] f32 at the masked positions of `masked` given image tokens
    /// [B, 1 + patches, D].
    pub fn mlm(&self, image_tokens: &Tensor, masked: Masked) -> Tensor {
        self.amp(|| self.mlm_logits(image_tokens, masked))
    }

    fn mlm_logits(&self, image_tokens: &Tensor, masked: Masked) -> Tensor {
        let fused = self
            .cross
            .fuse(&self.text.forward(masked.ids), image_tokens);
        let d = fused.size()[2];
        let at = fused.reshape([-1, d]).index_select(0, masked.positions);
        self.cross.mlm_logits(&at).to_kind(Kind::Float)
    }

    /// DCA-pooled features (g_i, g_t), each [B, D] f32, from image tokens [B, Ni, D], text
    /// tokens [B, L, D] and the caption ids [B, L].
    pub fn dca(
        &self,
        image_tokens: &Tensor,
        text_tokens: &Tensor,
        ids: &Tensor,
    ) -> (Tensor, Tensor) {
        self.amp(|| self.dca_features(image_tokens, text_tokens, ids))
    }

    fn dca_features(
        &self,
        image_tokens: &Tensor,
        text_tokens: &Tensor,
        ids: &Tensor,
    ) -> (Tensor, Tensor) {
        let mask = text_padding_mask(ids);
        let g_i = self
            .dca_image
            .forward(image_tokens, text_tokens, Some(&mask))
            .select(1, 0);
        let g_t = gather_rows(
            &self.dca_text.forward(text_tokens, image_tokens, None),
            &eot_index(ids),
        );
        (g_i.to_kind(Kind::Float), g_t.to_kind(Kind::Float))
    }

    /// ID logits [B, C] f32 of features [B, D], in fp32 inside an autocast region too.
    pub fn classify(&self, f: &Tensor) -> Tensor {
        super::amp::full_precision(|| f.to_kind(Kind::Float).apply(&self.classifier))
    }

    /// The training forward, in one autocast region: images [B, 3, H, W] f32 and caption ids
    /// [B, L] i64; `masked` is the MLM branch's input when it runs.
    pub fn forward_train(
        &self,
        images: &Tensor,
        ids: &Tensor,
        masked: Option<Masked>,
        heads: Heads,
    ) -> TrainOutputs {
        self.amp(|| self.forward_train_region(images, ids, masked, heads))
    }

    fn forward_train_region(
        &self,
        images: &Tensor,
        ids: &Tensor,
        masked: Option<Masked>,
        heads: Heads,
    ) -> TrainOutputs {
        let tse = self.tse.as_ref().filter(|_| heads.tse);
        let (img, txt, tse_i, tse_t) = match tse {
            Some(tse) => {
                let (img, attn_i) = self.visual.forward_with_attention(images);
                let (txt, attn_t) = self.text.forward_with_attention(ids);
                let mode = heads.tse_batchnorm;
                let tse_i = tse.image(&img, &attn_i, mode).to_kind(Kind::Float);
                let tse_t = tse.text(&txt, ids, &attn_t, mode).to_kind(Kind::Float);
                (img, txt, Some(tse_i), Some(tse_t))
            }
            None => (
                self.visual.forward(images),
                self.text.forward(ids),
                None,
                None,
            ),
        };
        let f_i = img.select(1, 0).to_kind(Kind::Float);
        let f_t = gather_rows(&txt, &eot_index(ids)).to_kind(Kind::Float);
        let (g_i, g_t) = if heads.dca {
            let (a, b) = self.dca_features(&img, &txt, ids);
            (Some(a), Some(b))
        } else {
            (None, None)
        };
        let (id_logits_i, id_logits_t) = if heads.id {
            (Some(self.classify(&f_i)), Some(self.classify(&f_t)))
        } else {
            (None, None)
        };
        let (mlm_logits, mlm_labels) = match masked {
            Some(m) => (
                Some(self.mlm_logits(&img, m)),
                Some(m.labels.shallow_clone()),
            ),
            None => (None, None),
        };
        TrainOutputs {
            f_i,
            f_t,
            g_i,
            g_t,
            tse_i,
            tse_t,
            id_logits_i,
            id_logits_t,
            mlm_logits,
            mlm_labels,
        }
    }
}
