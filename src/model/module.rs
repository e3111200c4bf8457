//! Which of the model's top-level modules a parameter belongs to: the one place that reads the
//! first segment of a parameter name. The constructors create the modules under these names, the
//! optimiser groups parameters by them, weight loading knows from them which modules CLIP weights
//! lack, and the IRRA export which ones IRRA has.

/// A top-level module of [`super::Ccma`], named as IRRA's and CCMA's state dicts name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Module {
    /// CLIP's two encoders (`base_model.*`).
    Backbone,
    /// IRRA's cross-attention of caption tokens to image tokens.
    CrossAttn,
    /// IRRA's residual blocks after the cross-attention (`cmt_depth` of them).
    CrossModalTransformer,
    /// IRRA's layer norms around the cross-modal block.
    LnPreT,
    LnPreI,
    LnPost,
    /// IRRA's masked-word prediction head.
    MlmHead,
    /// The identity classifier of the ID loss.
    Classifier,
    /// CCMA's differential cross-modal attention over image tokens, and over text tokens.
    DcaImage,
    DcaText,
    /// RDE's token selection embedding layers, image and text (`tse: true`).
    TseImage,
    TseText,
}

impl Module {
    pub const ALL: [Module; 12] = [
        Module::Backbone,
        Module::CrossAttn,
        Module::CrossModalTransformer,
        Module::LnPreT,
        Module::LnPreI,
        Module::LnPost,
        Module::MlmHead,
        Module::Classifier,
        Module::DcaImage,
        Module::DcaText,
        Module::TseImage,
        Module::TseText,
    ];

    /// The module's name: the first segment of its parameters' names.
    pub fn name(self) -> &'static str {
        match self {
            Module::Backbone => "base_model",
            Module::CrossAttn => "cross_attn",
            Module::CrossModalTransformer => "cross_modal_transformer",
            Module::LnPreT => "ln_pre_t",
            Module::LnPreI => "ln_pre_i",
            Module::LnPost => "ln_post",
            Module::MlmHead => "mlm_head",
            Module::Classifier => "classifier",
            Module::DcaImage => "dca_image",
            Module::DcaText => "dca_text",
            // RDE's spellings.
            Module::TseImage => "visul_emb_layer",
            Module::TseText => "texual_emb_layer",
        }
    }

    /// `name()` and the separator: what every parameter name of the module starts with.
    pub fn prefix(self) -> String {
        format!("{}.", self.name())
    }

    /// The module a parameter named `param` belongs to; `None` for a name no module has.
    pub fn of(param: &str) -> Option<Module> {
        let first = param.split('.').next()?;
        Module::ALL.into_iter().find(|m| m.name() == first)
    }

    /// Whether CLIP's weights hold the module (only the encoders; the rest starts random when a run
    /// starts from CLIP).
    pub fn from_clip(self) -> bool {
        self == Module::Backbone
    }

    /// Whether the module is one of the output heads.
    pub fn is_head(self) -> bool {
        matches!(self, Module::MlmHead | Module::Classifier)
    }

    /// Whether IRRA's model has the module (all but CCMA's DCA stacks and RDE's TSE layers).
    pub fn in_irra(self) -> bool {
        !matches!(
            self,
            Module::DcaImage | Module::DcaText | Module::TseImage | Module::TseText
        )
    }

    /// Whether the module's weights take `lr_factor` (METHOD.md section 5): the heads, the
    /// cross-modal attention and blocks, and the DCA stacks; not the layer norms around them.
    pub fn takes_lr_factor(self) -> bool {
        self.is_head()
            || matches!(
                self,
                Module::CrossAttn
                    | Module::CrossModalTransformer
                    | Module::DcaImage
                    | Module::DcaText
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_back_to_their_module() {
        for m in Module::ALL {
            assert_eq!(Module::of(&format!("{}.weight", m.name())), Some(m));
            assert_eq!(Module::of(m.name()), Some(m));
        }
        assert_eq!(Module::of("cross_attn_extra.weight"), None);
        assert_eq!(Module::of("dca_.weight"), None);
    }

    #[test]
    fn every_parameter_of_a_built_model_has_a_module_and_every_module_parameters() {
        let clip = crate::model::clip::ClipConfig {
            embed_dim: 32,
            image_size: (32, 16),
            vision_width: 32,
            vision_layers: 1,
            vision_heads: 2,
            patch_size: 16,
            stride: 16,
            context_length: 8,
            vocab_size: 64,
            text_width: 32,
            text_heads: 2,
            text_layers: 1,
        };
        let cfg = crate::model::ModelConfig {
            clip,
            cmt_depth: 1,
            dca_heads: 2,
            dca_depth: 1,
            lambda_init: 0.8,
            num_classes: 3,
            tse: true,
            select_ratio: 0.3,
        };
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _model = crate::model::Ccma::new(&vs.root(), &cfg);
        let names: Vec<String> = vs.variables().into_keys().collect();
        for n in &names {
            assert!(Module::of(n).is_some(), "{n} belongs to no module");
        }
        for m in Module::ALL {
            assert!(
                names.iter().any(|n| Module::of(n) == Some(m)),
                "{m:?} has no parameter"
            );
        }
    }
}
