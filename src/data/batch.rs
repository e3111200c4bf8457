//! A training batch as the model consumes it.
use super::tokenizer::{EOT_ID, MASK_ID, SOT_ID};
use tch::{Device, Kind, Tensor};

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

    /// Samples `start..start + len` of the batch (views of its tensors).
    pub fn narrow(&self, start: i64, len: i64) -> TrainBatch {
        let part = |t: &Tensor| t.narrow(0, start, len);
        TrainBatch {
            images: part(&self.images),
            caption_ids: part(&self.caption_ids),
            mlm_ids: part(&self.mlm_ids),
            mlm_labels: part(&self.mlm_labels),
            pids: part(&self.pids),
            image_ids: part(&self.image_ids),
        }
    }

    /// Caption tokens the MLM masking selected (labels that are not 0).
    pub fn masked_tokens(&self) -> i64 {
        self.mlm_labels.ne(0).sum(Kind::Int64).int64_value(&[])
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

    /// A random batch shaped like real data: `b` images [b, 3, H, W] of `img_size` (H, W),
    /// captions of 10-60 BPE tokens between the start and end tokens in `text_length` positions,
    /// about 15% of caption tokens masked with labels, pids in pairs modulo `num_classes`.
    pub fn random(
        b: i64,
        img_size: (i64, i64),
        text_length: i64,
        num_classes: i64,
        device: Device,
    ) -> TrainBatch {
        let (h, w, l) = (img_size.0, img_size.1, text_length);
        let opts = (Kind::Int64, device);
        let ids = Tensor::randint_low(1, MASK_ID, [b, l], opts);
        let lens = Tensor::randint_low(10, 60.min(l), [b, 1], opts);
        let pos = Tensor::arange(l, opts).unsqueeze(0);
        let ids = ids.where_self(&pos.lt_tensor(&lens), &Tensor::zeros_like(&ids));
        let ids = ids.where_self(&pos.ne_tensor(&lens), &Tensor::full_like(&ids, EOT_ID));
        let ids = ids.where_self(&pos.ne(0), &Tensor::full_like(&ids, SOT_ID));
        let selected = Tensor::rand([b, l], (Kind::Float, device))
            .lt(0.15)
            .logical_and(&pos.gt(0))
            .logical_and(&pos.lt_tensor(&lens));
        let mlm_labels = ids.where_self(&selected, &Tensor::zeros_like(&ids));
        let mlm_ids = ids.where_self(&selected.logical_not(), &Tensor::full_like(&ids, MASK_ID));
        TrainBatch {
            images: Tensor::randn([b, 3, h, w], (Kind::Float, device)),
            caption_ids: ids,
            mlm_ids,
            mlm_labels,
            pids: Tensor::arange(b, opts)
                .floor_divide_scalar(2)
                .remainder(num_classes),
            image_ids: Tensor::arange(b, opts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_batch_has_the_kinds_and_pids_of_real_data() {
        let b = TrainBatch::random(6, (32, 16), 16, 2, Device::Cpu);
        for t in [
            &b.caption_ids,
            &b.mlm_ids,
            &b.mlm_labels,
            &b.pids,
            &b.image_ids,
        ] {
            assert_eq!(t.kind(), Kind::Int64);
        }
        assert_eq!(Vec::<i64>::try_from(&b.pids).unwrap(), [0, 0, 1, 1, 0, 0]);
    }
}
