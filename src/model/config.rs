//! Everything that sizes a CCMA model, with the paper's ViT-B/16 preset; stored in a checkpoint's
//! metadata so the model can be rebuilt from the checkpoint alone.
use super::clip::ClipConfig;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

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
        }
    }

    /// `{METADATA_KEY: json}`, to store beside the weights.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        HashMap::from([(
            METADATA_KEY.to_string(),
            serde_json::to_string(self).expect("a model config serialises"),
        )])
    }

    /// The config stored in checkpoint metadata, if there is one.
    pub fn from_metadata(meta: &HashMap<String, String>) -> Result<Option<ModelConfig>> {
        meta.get(METADATA_KEY)
            .map(|json| {
                serde_json::from_str(json).with_context(|| {
                    format!("metadata `{METADATA_KEY}` is not a model description")
                })
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
