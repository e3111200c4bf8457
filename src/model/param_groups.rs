//! How the optimiser treats each parameter (METHOD.md section 5), decided from the module it
//! belongs to ([`Module`]) and whether it is a bias.
use super::module::Module;

/// The learning-rate multiplier a parameter takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateGroup {
    /// The pretrained backbone: × 1.
    Base,
    /// Biases: × `bias_lr_factor`.
    Bias,
    /// Randomly initialised modules and heads: × `lr_factor`.
    New,
    /// RDE's TSE layers: the absolute rate `tse_lr`, biases included (scaled by the schedule as
    /// every rate is).
    Tse,
}

/// A parameter's rate group and whether it takes the bias weight decay (`weight_decay_bias`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamGroup {
    pub rate: RateGroup,
    pub bias_decay: bool,
}

/// In METHOD.md's order of precedence: RDE's TSE layers take `tse_lr` (section 7), biases
/// included; the heads (`classifier`, `mlm_head`) take `lr_factor` even for their biases;
/// otherwise any bias takes `bias_lr_factor`; otherwise the modules that
/// [`Module::takes_lr_factor`] take `lr_factor`. Every bias (a BatchNorm's shift included) takes
/// the bias weight decay.
pub fn param_group(name: &str) -> ParamGroup {
    let bias = name.contains("bias");
    let module = Module::of(name);
    let rate = if module.is_some_and(Module::is_tse) {
        RateGroup::Tse
    } else if module.is_some_and(Module::is_head) {
        RateGroup::New
    } else if bias {
        RateGroup::Bias
    } else if module.is_some_and(Module::takes_lr_factor) {
        RateGroup::New
    } else {
        RateGroup::Base
    };
    ParamGroup {
        rate,
        bias_decay: bias,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_name() {
        let g = |n| param_group(n).rate;
        assert_eq!(g("base_model.visual.conv1.weight"), RateGroup::Base);
        assert_eq!(g("base_model.ln_final.bias"), RateGroup::Bias);
        assert_eq!(g("cross_attn.in_proj_weight"), RateGroup::New);
        assert_eq!(g("cross_attn.in_proj_bias"), RateGroup::Bias);
        assert_eq!(g("dca_image.0.q_proj.weight"), RateGroup::New);
        assert_eq!(g("classifier.bias"), RateGroup::New);
        assert_eq!(g("mlm_head.fc.weight"), RateGroup::New);
        assert_eq!(
            g("cross_modal_transformer.resblocks.0.attn.out_proj.weight"),
            RateGroup::New
        );
        assert_eq!(g("ln_pre_t.weight"), RateGroup::Base);
        assert_eq!(g("visul_emb_layer.fc.weight"), RateGroup::Tse);
        assert_eq!(g("texual_emb_layer.mlp.layers.0.bias"), RateGroup::Tse);
        assert!(param_group("texual_emb_layer.mlp.bns.0.bias").bias_decay);
        assert!(!param_group("visul_emb_layer.mlp.bns.0.weight").bias_decay);
        assert!(param_group("classifier.bias").bias_decay);
        assert!(!param_group("classifier.weight").bias_decay);
    }
}
