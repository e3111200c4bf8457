//! Everything that sizes a CCMA model, with the paper's ViT-B/16 preset; stored in a checkpoint's
//! metadata so the model can be rebuilt from the checkpoint alone.
use super::clip::ClipConfig;
use crate::ranges::{check_range, invalid};
use crate::UsageError;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Tokens a caption may be given: well past CLIP's 77, far below what would exhaust memory.
pub const MAX_TEXT_LENGTH: usize = 1024;
/// The largest image side accepted.
pub const MAX_IMAGE_SIDE: i64 = 4096;
/// Widths, sizes and counts of the model: far above any CLIP, below what would exhaust memory.
const MAX_WIDTH: f64 = 16384.0;
const MAX_LAYERS: f64 = 256.0;
const MAX_VOCAB_SIZE: f64 = 10_000_000.0;

/// The metadata key of a checkpoint that holds its [`ModelConfig`] as JSON.
pub const METADATA_KEY: &str = "ccma.model";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub clip: ClipConfig,
    /// Residual blocks of the cross-modal (MLM) transformer.
    pub cmt_depth: i64,
    /// DCA heads (an even number: heads are paired) and blocks per stack.
    pub dca_heads: i64,
    pub dca_depth: i64,
    /// Initial λ of the differential attention.
    pub lambda_init: f64,
    /// Identities of the ID classifier (rows of `classifier.weight`).
    pub num_classes: i64,
    /// RDE's token selection embedding layers (METHOD.md section 7); absent from the
    /// descriptions of earlier checkpoints, which had none.
    #[serde(default)]
    pub tse: bool,
    /// The fraction of the tokens the TSE layers select (ρ).
    #[serde(default = "rde_select_ratio")]
    pub select_ratio: f64,
}

/// RDE's `select_ratio`.
fn rde_select_ratio() -> f64 {
    0.3
}

impl ModelConfig {
    /// The paper's model: CLIP ViT-B/16 at `image_size` (H, W), a 4-block cross-modal
    /// transformer, one 8-head DCA block per direction with λ_init 0.8.
    pub fn vit_b16(image_size: (i64, i64), num_classes: i64) -> ModelConfig {
        ModelConfig {
            clip: ClipConfig::vit_b16(image_size),
            cmt_depth: 4,
            dca_heads: 8,
            dca_depth: 1,
            lambda_init: 0.8,
            num_classes,
            tse: false,
            select_ratio: rde_select_ratio(),
        }
    }

    /// `{METADATA_KEY: json}`, to store beside the weights.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([(
            METADATA_KEY.to_string(),
            serde_json::to_string(self).expect("a model config serialises"),
        )])
    }

    /// The config stored in checkpoint metadata, if there is one, validated.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Option<ModelConfig>> {
        let Some(json) = meta.get(METADATA_KEY) else {
            return Ok(None);
        };
        let c: ModelConfig = serde_json::from_str(json).map_err(|e| {
            UsageError(format!(
                "metadata `{METADATA_KEY}` is not a model description ({e})"
            ))
        })?;
        c.validate()
            .map_err(|e| UsageError(format!("metadata `{METADATA_KEY}`: {e:#}")))?;
        Ok(Some(c))
    }

    /// The ranges of the sizes (widths, layers, heads dividing their widths, patch and stride,
    /// vocabulary, λ_init), each named by its run-config key (IRRA's names): the one rule for
    /// sizes from a YAML file (`ModelSection` checks its keys through it) and for sizes read off a
    /// weights file or a checkpoint's metadata.
    pub fn validate_sizes(&self) -> Result<()> {
        let c = &self.clip;
        let side = MAX_IMAGE_SIDE as f64;
        check_range(&[
            ("embed_dim", c.embed_dim as f64, 1.0, MAX_WIDTH),
            ("vision_width", c.vision_width as f64, 1.0, MAX_WIDTH),
            ("vision_layers", c.vision_layers as f64, 1.0, MAX_LAYERS),
            ("vision_heads", c.vision_heads as f64, 1.0, MAX_WIDTH),
            ("vision_patch_size", c.patch_size as f64, 1.0, side),
            ("stride_size", c.stride as f64, 1.0, side),
            ("transformer_width", c.text_width as f64, 1.0, MAX_WIDTH),
            ("transformer_layers", c.text_layers as f64, 1.0, MAX_LAYERS),
            ("transformer_heads", c.text_heads as f64, 1.0, MAX_WIDTH),
            ("cmt_depth", self.cmt_depth as f64, 1.0, MAX_LAYERS),
            ("dca_depth", self.dca_depth as f64, 1.0, MAX_LAYERS),
        ])?;
        check_range(&[("vocab_size", c.vocab_size as f64, 1.0, MAX_VOCAB_SIZE)])?;
        if self.dca_heads <= 0 || self.dca_heads % 2 != 0 {
            invalid!(
                "dca_heads",
                "{} (expected a positive even number: heads are paired)",
                self.dca_heads
            );
        }
        let divides = [
            ("dca_heads", self.dca_heads, "embed_dim", c.embed_dim),
            (
                "transformer_heads",
                c.text_heads,
                "transformer_width",
                c.text_width,
            ),
            (
                "vision_heads",
                c.vision_heads,
                "vision_width",
                c.vision_width,
            ),
        ];
        for (key, heads, of, width) in divides {
            if width % heads != 0 {
                invalid!(key, "{heads} does not divide `{of}` {width}");
            }
        }
        check_range(&[
            ("lambda_init", self.lambda_init, 0.0, 1.0),
            ("select_ratio", self.select_ratio, 0.0, 1.0),
        ])
    }

    /// [`ModelConfig::validate_sizes`], and the input (text length, image size against the
    /// patch) and the classifier: for sizes read from a file before a model is built from them.
    pub fn validate(&self) -> Result<()> {
        self.validate_sizes()?;
        let c = &self.clip;
        let (h, w) = c.image_size;
        let limits = [
            ("text_length", c.context_length, 2, MAX_TEXT_LENGTH as i64),
            ("img_size", h, c.patch_size, MAX_IMAGE_SIDE),
            ("img_size", w, c.patch_size, MAX_IMAGE_SIDE),
            ("num_classes", self.num_classes, 1, MAX_CLASSES),
        ];
        for (key, v, lo, hi) in limits {
            if !(lo..=hi).contains(&v) {
                bail!(UsageError(format!(
                    "invalid value for `{key}`: {v} (expected a number from {lo} to {hi})"
                )));
            }
        }
        Ok(())
    }
}

/// Identities an ID classifier may have: far above any person re-identification set.
const MAX_CLASSES: i64 = 10_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    /// Biases start as IRRA's do: the added modules' linear biases as `torch.nn.Linear` leaves
    /// them (nonzero, within 1/sqrt(fan_in)); attention projections', the classifier's and the
    /// from-scratch CLIP towers' at zero.
    #[test]
    fn biases_start_as_irra_s() {
        let mut c = ModelConfig::vit_b16((32, 16), 5);
        c.clip = crate::model::clip::ClipConfig {
            embed_dim: 32,
            vision_width: 64,
            vision_layers: 1,
            vision_heads: 1,
            text_width: 64,
            text_heads: 1,
            text_layers: 1,
            context_length: 8,
            ..c.clip
        };
        c.cmt_depth = 1;
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let _model = crate::model::Ccma::new(&vs.root(), &c);
        let vars = vs.variables();
        let max_abs = |k: &str| vars[k].abs().max().double_value(&[]);
        for (k, fan_in) in [
            ("mlm_head.dense.bias", 32.0),
            ("mlm_head.fc.bias", 32.0),
            ("cross_modal_transformer.resblocks.0.mlp.c_fc.bias", 32.0),
            ("cross_modal_transformer.resblocks.0.mlp.c_proj.bias", 128.0),
            ("dca_image.0.q_proj.bias", 32.0),
            ("dca_text.0.mlp.c_proj.bias", 128.0),
        ] {
            let m = max_abs(k);
            assert!(m > 0.0 && m <= 1.0 / f64::sqrt(fan_in), "{k}: {m}");
        }
        for k in [
            "cross_attn.in_proj_bias",
            "cross_attn.out_proj.bias",
            "cross_modal_transformer.resblocks.0.attn.out_proj.bias",
            "classifier.bias",
            "base_model.transformer.resblocks.0.mlp.c_fc.bias",
            "base_model.visual.transformer.resblocks.0.mlp.c_proj.bias",
        ] {
            assert_eq!(max_abs(k), 0.0, "{k}");
        }
    }

    #[test]
    fn metadata_round_trip() {
        let c = ModelConfig::vit_b16((384, 128), 11003);
        assert_eq!(c.clip.grid(), (24, 8));
        assert_eq!(
            ModelConfig::from_metadata(&c.to_metadata()).unwrap(),
            Some(c)
        );
        assert_eq!(ModelConfig::from_metadata(&HashMap::new()).unwrap(), None);
        let bad = HashMap::from([(METADATA_KEY.to_string(), "{".to_string())]);
        assert!(ModelConfig::from_metadata(&bad).is_err());
    }
}
