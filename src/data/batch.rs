//! A training batch as the model consumes it.
use tch::{Device, Tensor};

/// One training batch. `B` samples, images `H x W`, captions `L = text_length` tokens.
#[derive(Debug)]
pub struct TrainBatch {
    /// [B, 3, H, W] f32, normalised with CLIP's mean and std.
    pub images: Tensor,
    /// [B, L] i64 token ids of the captions (0-padded, EOT at argmax).
    pub caption_ids: Tensor,
    /// [B, L] i64 the same captions after MLM masking.
    pub mlm_ids: Tensor,
    /// [B, L] i64 original ids at masked positions, 0 elsewhere (ignored).
    pub mlm_labels: Tensor,
    /// [B] i64 person ids (0..num_classes-1).
    pub pids: Tensor,
    /// [B] i64 image ids (image index in annotation order).
    pub image_ids: Tensor,
}

impl TrainBatch {
    /// Number of samples.
    pub fn len(&self) -> i64 {
        self.pids.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies every tensor to `device` (non-blocking where the source is pinned).
    pub fn to_device(&self, device: Device) -> TrainBatch {
        let mv = |t: &Tensor| t.to_device_(device, t.kind(), true, false);
        TrainBatch {
            images: mv(&self.images),
            caption_ids: mv(&self.caption_ids),
            mlm_ids: mv(&self.mlm_ids),
            mlm_labels: mv(&self.mlm_labels),
            pids: mv(&self.pids),
            image_ids: mv(&self.image_ids),
        }
    }
}
