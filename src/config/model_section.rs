//! `ModelSection`: the pretrained weights, or the sizes of a model trained from scratch. The sizes
//! and the paper's values of them are the model's ([`ModelConfig`], its `vit_b16` preset); this
//! section names them with IRRA's keys, through one table ([`model_keys!`]).
use crate::model::config::ModelConfig;
use crate::ranges::invalid;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Defines [`ModelSection`] from the table of its size keys and where each sits in a
/// [`ModelConfig`]: the section's fields, its default (the paper's ViT-B/16), and the model of
/// its sizes, all from one list.
macro_rules! model_keys {
    ($($(#[$doc:meta])* $key:ident: $ty:ty => $($path:ident).+,)+) => {
        /// The network: pretrained weights, or the sizes of a model trained from scratch
        /// (pretrained weights give their own).
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default)]
        pub struct ModelSection {
            pub pretrain_choice: String,
            /// OpenAI CLIP TorchScript archive (`ViT-B-16.pt`) or safetensors; none = from scratch.
            pub pretrained: Option<PathBuf>,
            $($(#[$doc])* pub $key: $ty,)+
            /// Start the DCA blocks' residual branches at zero (`g = f` at initialisation); off
            /// keeps IRRA's initialisation, as the paper's runs.
            pub zero_init_residual: bool,
            pub dropout: f64,
        }

        impl Default for ModelSection {
            fn default() -> Self {
                let paper = ModelConfig::vit_b16((PAPER_IMAGE_SIDE, PAPER_IMAGE_SIDE), 1);
                ModelSection {
                    pretrain_choice: "ViT-B/16".into(),
                    pretrained: None,
                    $($key: paper.$($path).+,)+
                    zero_init_residual: false,
                    dropout: 0.0,
                }
            }
        }

        impl ModelSection {
            /// `base` with this section's sizes.
            pub fn sized(&self, mut base: ModelConfig) -> ModelConfig {
                $(base.$($path).+ = self.$key;)+
                base
            }
        }
    };
}

/// The smallest vocabulary CLIP's tokenizer can feed: its ids go up to 49407 (the data floor's
/// tokenizer checks that it agrees).
pub const MIN_VOCAB_SIZE: i64 = 49408;

/// An image side the default is read at: any valid one (the sizes do not depend on it).
const PAPER_IMAGE_SIDE: i64 = 224;

model_keys! {
    stride_size: i64 => clip.stride,
    embed_dim: i64 => clip.embed_dim,
    vision_width: i64 => clip.vision_width,
    vision_layers: i64 => clip.vision_layers,
    vision_heads: i64 => clip.vision_heads,
    vision_patch_size: i64 => clip.patch_size,
    transformer_width: i64 => clip.text_width,
    transformer_layers: i64 => clip.text_layers,
    transformer_heads: i64 => clip.text_heads,
    vocab_size: i64 => clip.vocab_size,
    cmt_depth: i64 => cmt_depth,
    dca_heads: i64 => dca_heads,
    dca_depth: i64 => dca_depth,
    lambda_init: f64 => lambda_init,
    /// RDE's token selection embedding layers.
    tse: bool => tse,
    select_ratio: f64 => select_ratio,
}

impl ModelSection {
    pub(super) fn validate(&self) -> Result<()> {
        self.validate_sizes()?;
        let tokens = MIN_VOCAB_SIZE;
        if self.vocab_size < tokens {
            invalid!(
                "vocab_size",
                "{} (expected at least {tokens}: CLIP's tokenizer gives ids up to {})",
                self.vocab_size,
                tokens - 1
            );
        }
        let rde = ModelConfig::vit_b16((PAPER_IMAGE_SIDE, PAPER_IMAGE_SIDE), 1).select_ratio;
        if !self.tse && self.select_ratio != rde {
            invalid!(
                "select_ratio",
                "{} acts only on the TSE layers (expected `tse: true` with it, or the default {rde})",
                self.select_ratio
            );
        }
        if self.dropout != 0.0 {
            invalid!(
                "dropout",
                "{} (dropout is not implemented; 0, the paper's setting, is the only value)",
                self.dropout
            );
        }
        Ok(())
    }

    /// The ranges of the sizes, naming the key: the model's own rule
    /// ([`ModelConfig::validate_sizes`]).
    pub fn validate_sizes(&self) -> Result<()> {
        self.sized(ModelConfig::vit_b16(
            (PAPER_IMAGE_SIDE, PAPER_IMAGE_SIDE),
            1,
        ))
        .validate_sizes()
    }
}
