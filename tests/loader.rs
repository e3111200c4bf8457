//! The training loader's batches: masked captions exactly where `MLM` asks for them, and
//! `txt_aug`'s captions.
mod common;

use ccma::config::DatasetName;
use ccma::data::annotations;
use ccma::data::batch::TrainBatch;
use ccma::data::loader::{LoaderOptions, TrainLoader};
use ccma::data::tokenizer::MASK_ID;
use common::*;
use tch::{Device, Kind};

/// The first batch of epoch 1 of the `ENTRIES` set, under `tiny_config` with `MLM` set to `mlm`.
fn first_batch(mlm: bool) -> TrainBatch {
    first_batch_with(mlm, false)
}

/// [`first_batch`] with `txt_aug` set to `txt_aug`.
fn first_batch_with(mlm: bool, txt_aug: bool) -> TrainBatch {
    let root = cuhk_fixture();
    let dataset =
        annotations::load(DatasetName::CuhkPedes, &root.path().join("CUHK-PEDES")).unwrap();
    let mut cfg = tiny_config(if mlm { "sdm+mlm" } else { "sdm" });
    cfg.loss.MLM = mlm;
    cfg.loss.masked_token_rate = 1.0; // every selected token becomes the mask token
    cfg.loss.masked_token_unchanged_rate = 0.0;
    cfg.data.num_workers = 1;
    cfg.data.txt_aug = txt_aug;
    let loader =
        TrainLoader::new(dataset.train, LoaderOptions::from_config(&cfg, Device::Cpu)).unwrap();
    loader.epoch(1, 0).next().unwrap().unwrap()
}

#[test]
fn without_mlm_a_batch_has_no_masked_captions() {
    let b = first_batch(false);
    assert_eq!(b.len(), 4, "the four training pairs in one batch");
    assert!(b.masked.is_none());
    assert_eq!(b.masked_tokens(), 0);
    assert_eq!(b.slices.all_masked, [0; 4]);
}

#[test]
fn with_mlm_the_masked_captions_differ_from_the_captions_at_their_positions_only() {
    let b = first_batch(true);
    let m = b.masked.as_ref().expect("MLM masks the captions");
    let total: i64 = m.per_sample.iter().sum();
    assert!(total > 0, "seed 1 selects some of the captions' tokens");
    assert_eq!(m.per_sample.len(), 4);
    assert_eq!(
        (m.positions.size(), m.targets.size()),
        (vec![total], vec![total])
    );
    assert_eq!(b.slices.all_masked, m.per_sample);
    let (ids, caps) = (m.ids.reshape([-1]), b.caption_ids.reshape([-1]));
    assert!(
        ids.index_select(0, &m.positions)
            .eq(MASK_ID)
            .all()
            .int64_value(&[])
            == 1
    );
    assert!(caps.index_select(0, &m.positions).equal(&m.targets));
    let changed = ids.ne_tensor(&caps).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(
        changed, total,
        "nothing outside the selected positions changes"
    );
}

/// `txt_aug` changes the captions the batch carries (and MLM masks those), nothing else: the same
/// images, pids and pairs; SOT first, EOT once, zero padding after it.
#[test]
fn txt_aug_augments_the_captions_of_the_batch_only() {
    let (plain, aug) = (first_batch(true), first_batch_with(true, true));
    assert!(plain.images.equal(&aug.images));
    assert!(plain.pids.equal(&aug.pids));
    assert_eq!(plain.indices, aug.indices);
    assert!(
        !plain.caption_ids.equal(&aug.caption_ids),
        "some token changed"
    );
    for row in Vec::<Vec<i64>>::try_from(&aug.caption_ids).unwrap() {
        use ccma::data::tokenizer::{EOT_ID, SOT_ID};
        assert_eq!(row[0], SOT_ID);
        let eot: Vec<usize> = (0..row.len()).filter(|&i| row[i] == EOT_ID).collect();
        assert_eq!(eot.len(), 1, "{row:?}");
        assert!(row[eot[0] + 1..].iter().all(|&t| t == 0), "{row:?}");
    }
    let m = aug.masked.as_ref().expect("MLM masks the captions");
    let caps = aug.caption_ids.reshape([-1]);
    assert!(caps.index_select(0, &m.positions).equal(&m.targets));
}
