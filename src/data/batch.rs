//! A training batch as the model consumes it, with what the step needs to know about it on the
//! host (so that nothing is read back from the device to learn it).
use super::tokenizer::{EOT_ID, MASK_ID, SOT_ID};
use tch::{Device, Kind, Tensor};

/// One training batch (this rank's slice of the global batch in a data-parallel run). `B`
/// samples, images `H x W`, captions `L = text_length` tokens.
#[derive(Debug)]
pub struct TrainBatch {
    /// [B, 3, H, W] f32, normalised with CLIP's mean and std.
    pub images: Tensor,
    /// [B, L] i64 token ids of the captions (0-padded, EOT at argmax).
    pub caption_ids: Tensor,
    /// The MLM-masked captions, where `MLM` masks them.
    pub masked: Option<MaskedCaptions>,
    /// [B] i64 person ids (0..num_classes-1).
    pub pids: Tensor,
    /// The training-pair index of each of the B samples (on the host).
    pub indices: Vec<i64>,
    /// The clean division's weight (0 or 1) of every sample of the whole batch (every rank's, in
    /// rank order; on the host), where the run divides its pairs (`noise_filter: ccd`); the
    /// trainer sets them.
    pub weights: Option<Vec<f32>>,
    /// Where the global batch's samples are across the ranks.
    pub slices: RankSlices,
}

/// The batch's captions after MLM masking, `M` masked tokens in all.
#[derive(Debug)]
pub struct MaskedCaptions {
    /// [B, L] i64 the captions with the selected tokens replaced.
    pub ids: Tensor,
    /// [M] i64 the selected positions, as indices into the B·L tokens in row-major order.
    pub positions: Tensor,
    /// [M] i64 the original ids at `positions` (what the MLM head predicts).
    pub targets: Tensor,
    /// Selected tokens of each sample, in order (on the host; they sum to M).
    pub per_sample: Vec<i64>,
}

impl MaskedCaptions {
    /// Selected tokens (M).
    pub fn tokens(&self) -> i64 {
        self.per_sample.iter().sum()
    }

    /// Samples `start..start + len` (views; positions counted from the part's first token).
    fn narrow(&self, start: i64, len: i64) -> MaskedCaptions {
        let (s, e) = (start as usize, (start + len) as usize);
        let before: i64 = self.per_sample[..s].iter().sum();
        let per_sample = self.per_sample[s..e].to_vec();
        let m: i64 = per_sample.iter().sum();
        let l = self.ids.size()[1];
        MaskedCaptions {
            ids: self.ids.narrow(0, start, len),
            positions: self.positions.narrow(0, before, m) - start * l,
            targets: self.targets.narrow(0, before, m),
            per_sample,
        }
    }

    fn to_device(&self, device: Device) -> MaskedCaptions {
        MaskedCaptions {
            ids: to_device(&self.ids, device),
            positions: to_device(&self.positions, device),
            targets: to_device(&self.targets, device),
            per_sample: self.per_sample.clone(),
        }
    }
}

/// `t` on `device` (non-blocking where the source is pinned).
fn to_device(t: &Tensor, device: Device) -> Tensor {
    t.to_device_(device, t.kind(), true, false)
}

/// How the global batch is split over the ranks, known on the host.
#[derive(Debug, PartialEq)]
pub struct RankSlices {
    /// Samples of each rank's slice, in rank order (one entry in a one-process run).
    pub sizes: Vec<i64>,
    /// Masked caption tokens of every rank's samples, a count per sample in rank order.
    pub all_masked: Vec<i64>,
    /// [ΣB] i64 every rank's pids in rank order, where there are other ranks.
    pub all_pids: Option<Tensor>,
    /// Every rank's training-pair indices in rank order (the batch's own in a one-process run).
    pub all_indices: Vec<i64>,
}

impl RankSlices {
    /// The slices of a one-process batch with `masked` tokens per sample and training-pair
    /// `indices`.
    pub fn whole(masked: &[i64], indices: &[i64]) -> RankSlices {
        RankSlices {
            sizes: vec![indices.len() as i64],
            all_masked: masked.to_vec(),
            all_pids: None,
            all_indices: indices.to_vec(),
        }
    }

    /// The samples of rank `rank`'s slice, as a range of the whole batch's.
    pub fn range(&self, rank: usize) -> std::ops::Range<usize> {
        let start: i64 = self.sizes[..rank].iter().sum();
        start as usize..(start + self.sizes[rank]) as usize
    }
}

/// The masked positions of MLM labels (`[B·L]` row-major, 0 where nothing is masked): their
/// indices and the labels there, ([M], [M]).
pub fn masked_positions(labels: &[i64]) -> (Vec<i64>, Vec<i64>) {
    labels
        .iter()
        .enumerate()
        .filter(|(_, &l)| l != 0)
        .map(|(i, &l)| (i as i64, l))
        .unzip()
}

/// Masked tokens of each caption of MLM labels (`[B·L]` row-major, 0 where nothing is masked),
/// captions of `l` tokens.
pub fn per_sample(labels: &[i64], l: usize) -> Vec<i64> {
    labels
        .chunks(l)
        .map(|c| c.iter().filter(|&&x| x != 0).count() as i64)
        .collect()
}

impl TrainBatch {
    /// Number of samples.
    pub fn len(&self) -> i64 {
        self.pids.size()[0]
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `start..start + len` of the batch, as one process's batch (views of its tensors;
    /// the masked positions of those samples, counted from the chunk's first token). A part
    /// carries no division weights: a step takes them from the whole batch's layout.
    pub fn narrow(&self, start: i64, len: i64) -> TrainBatch {
        let part = |t: &Tensor| t.narrow(0, start, len);
        let masked = self.masked.as_ref().map(|m| m.narrow(start, len));
        let counts = masked
            .as_ref()
            .map_or_else(|| vec![0; len as usize], |m| m.per_sample.clone());
        let indices = self.indices[start as usize..(start + len) as usize].to_vec();
        TrainBatch {
            images: part(&self.images),
            caption_ids: part(&self.caption_ids),
            masked,
            pids: part(&self.pids),
            weights: None,
            slices: RankSlices::whole(&counts, &indices),
            indices,
        }
    }

    /// Caption tokens the MLM masking selected (M; 0 without masking).
    pub fn masked_tokens(&self) -> i64 {
        self.masked.as_ref().map_or(0, MaskedCaptions::tokens)
    }

    /// Copies every tensor to `device` (non-blocking where the source is pinned).
    pub fn to_device(&self, device: Device) -> TrainBatch {
        let mv = |t: &Tensor| to_device(t, device);
        TrainBatch {
            images: mv(&self.images),
            caption_ids: mv(&self.caption_ids),
            masked: self.masked.as_ref().map(|m| m.to_device(device)),
            pids: mv(&self.pids),
            indices: self.indices.clone(),
            weights: self.weights.clone(),
            slices: RankSlices {
                sizes: self.slices.sizes.clone(),
                all_masked: self.slices.all_masked.clone(),
                all_pids: self.slices.all_pids.as_ref().map(mv),
                all_indices: self.slices.all_indices.clone(),
            },
        }
    }

    /// A random batch shaped like real data, on `device`: `b` images [b, 3, H, W] of `img_size`
    /// (H, W), captions of 10-60 BPE tokens between the start and end tokens in `text_length`
    /// positions, about 15% of caption tokens masked with labels, pids in pairs modulo
    /// `num_classes`; one process's batch.
    pub fn random(
        b: i64,
        img_size: (i64, i64),
        text_length: i64,
        num_classes: i64,
        device: Device,
    ) -> TrainBatch {
        Self::random_on_host(b, img_size, text_length, num_classes).to_device(device)
    }

    /// Rank `rank`'s slice of a random global batch of `world` slices of `b` samples (drawn as
    /// [`TrainBatch::random`] draws one of `world · b`), with the layout of every rank's slice:
    /// sizes, masked tokens and all pids. Every rank that calls this with libtorch's generator
    /// in the same state holds a slice of the same global batch.
    pub fn random_slice(
        b: i64,
        img_size: (i64, i64),
        text_length: i64,
        num_classes: i64,
        (rank, world): (usize, usize),
        device: Device,
    ) -> TrainBatch {
        let whole = Self::random_on_host(b * world as i64, img_size, text_length, num_classes);
        if world == 1 {
            return whole.to_device(device);
        }
        let mut own = whole.narrow(rank as i64 * b, b);
        own.slices = RankSlices {
            sizes: vec![b; world],
            all_masked: whole.slices.all_masked.clone(),
            all_pids: Some(whole.pids.shallow_clone()),
            all_indices: whole.indices.clone(),
        };
        own.to_device(device)
    }

    fn random_on_host(
        b: i64,
        img_size: (i64, i64),
        text_length: i64,
        num_classes: i64,
    ) -> TrainBatch {
        let (h, w, l) = (img_size.0, img_size.1, text_length);
        let device = Device::Cpu;
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
        let labels = Vec::<i64>::try_from(&mlm_labels.reshape([-1])).expect("i64 labels");
        let (positions, targets) = masked_positions(&labels);
        let counts = per_sample(&labels, l as usize);
        TrainBatch {
            images: Tensor::randn([b, 3, h, w], (Kind::Float, device)),
            caption_ids: ids,
            masked: Some(MaskedCaptions {
                ids: mlm_ids,
                positions: Tensor::from_slice(&positions),
                targets: Tensor::from_slice(&targets),
                per_sample: counts.clone(),
            }),
            pids: Tensor::arange(b, opts)
                .floor_divide_scalar(2)
                .remainder(num_classes),
            indices: (0..b).collect(),
            weights: None,
            slices: RankSlices::whole(&counts, &(0..b).collect::<Vec<_>>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_batch_has_the_kinds_and_pids_of_real_data() {
        let b = TrainBatch::random(6, (32, 16), 16, 2, Device::Cpu);
        let mc = b.masked.as_ref().expect("a random batch is masked");
        for t in [&b.caption_ids, &mc.ids, &mc.positions, &mc.targets, &b.pids] {
            assert_eq!(t.kind(), Kind::Int64);
        }
        assert_eq!(Vec::<i64>::try_from(&b.pids).unwrap(), [0, 0, 1, 1, 0, 0]);
        let m = mc.positions.size()[0];
        assert!(m > 0 && m == b.masked_tokens());
        assert_eq!(
            b.slices,
            RankSlices::whole(&mc.per_sample, &[0, 1, 2, 3, 4, 5])
        );
        assert_eq!(mc.per_sample.iter().sum::<i64>(), m);
        let masked = mc.ids.reshape([-1]).index_select(0, &mc.positions);
        let original = b.caption_ids.reshape([-1]).index_select(0, &mc.positions);
        assert!(original.equal(&mc.targets));
        assert_eq!(
            masked.eq(MASK_ID).sum(Kind::Int64).int64_value(&[]),
            m,
            "every selected token is masked"
        );
    }

    #[test]
    fn a_narrowed_batch_has_its_samples_masked_positions() {
        let b = TrainBatch::random(6, (32, 16), 16, 2, Device::Cpu);
        let part = b.narrow(2, 3);
        let m = part.masked_tokens();
        let mc = part
            .masked
            .as_ref()
            .expect("a part of a masked batch is masked");
        assert_eq!(mc.positions.size(), [m]);
        let masked = mc.ids.reshape([-1]).index_select(0, &mc.positions);
        assert_eq!(masked.eq(MASK_ID).sum(Kind::Int64).int64_value(&[]), m);
        let original = part
            .caption_ids
            .reshape([-1])
            .index_select(0, &mc.positions);
        assert!(original.equal(&mc.targets));
        let whole: i64 = (0..3).map(|s| b.narrow(s * 2, 2).masked_tokens()).sum();
        assert_eq!(whole, b.masked_tokens());
    }

    #[test]
    fn the_slices_of_a_random_global_batch_know_every_rank() {
        let slice = |rank| {
            tch::manual_seed(3);
            TrainBatch::random_slice(3, (32, 16), 16, 5, (rank, 2), Device::Cpu)
        };
        let (first, second) = (slice(0), slice(1));
        tch::manual_seed(3);
        let whole = TrainBatch::random(6, (32, 16), 16, 5, Device::Cpu);
        for (r, part) in [&first, &second].into_iter().enumerate() {
            let own = whole.narrow(3 * r as i64, 3);
            assert!(part.images.equal(&own.images) && part.pids.equal(&own.pids));
            assert_eq!(part.masked_tokens(), own.masked_tokens());
            let s = &part.slices;
            assert_eq!(s.sizes, [3, 3]);
            assert_eq!(s.all_masked, whole.slices.all_masked);
            assert_eq!(s.range(r), 3 * r..3 * (r + 1));
            assert!(s.all_pids.as_ref().unwrap().equal(&whole.pids));
        }
        assert_eq!(
            first.masked_tokens() + second.masked_tokens(),
            whole.masked_tokens()
        );
    }

    #[test]
    fn masked_positions_are_the_nonzero_labels_in_order() {
        assert_eq!(
            masked_positions(&[0, 7, 0, 0, 9, 3]),
            (vec![1, 4, 5], vec![7, 9, 3])
        );
        assert_eq!(masked_positions(&[0, 0]), (vec![], vec![]));
    }
}
