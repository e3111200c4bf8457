//! Evaluation features on the CPU: the encoding pipeline (images decoded and transformed in
//! parallel ahead of the model, batch after batch) gives the features of encoding each batch by
//! hand to the last bit, with unreadable images left out; and CPU features do not depend on
//! `matmul_precision` (the CPU's float32 matmuls stay IEEE fp32 whatever the setting).
mod common;
use ccma::data::transforms::{load_rgb, ImageTransform};
use ccma::model::amp::set_cuda_matmul_precision;
use ccma::retrieval::encode::{embed_captions, embed_readable_images, EncodeOptions};
use common::tiny_config;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// `n` images of random pixels (40x90, JPEG and PNG in turn) in `dir`, with an unreadable file
/// at each position of `broken`.
fn noise_images(dir: &Path, n: usize, broken: &[usize]) -> Vec<PathBuf> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
    (0..n)
        .map(|i| {
            let path = dir.join(format!("{i}.{}", ["jpg", "png"][i % 2]));
            match broken.contains(&i) {
                true => std::fs::write(&path, b"not an image").unwrap(),
                false => image::RgbImage::from_fn(40, 90, |_, _| image::Rgb(rng.gen()))
                    .save(&path)
                    .unwrap(),
            }
            path
        })
        .collect()
}

/// The tiny model (32x16 images, 16 tokens), the same weights for every call.
fn model() -> (ccma::model::Ccma, EncodeOptions) {
    static SEEDED: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = SEEDED.lock().unwrap_or_else(|e| e.into_inner());
    let cfg = tiny_config("sdm");
    tch::manual_seed(11);
    let (_, model) = ccma::factory::training_model(&cfg, 4, Device::Cpu).unwrap();
    let mut opts = EncodeOptions::from_config(&cfg.data, Device::Cpu);
    opts.batch_size = 3;
    (model, opts)
}

/// Each batch of `opts.batch_size` paths decoded, transformed, stacked and encoded in turn, its
/// unreadable images left out: [N', D] f32.
fn by_hand(model: &ccma::model::Ccma, paths: &[PathBuf], opts: &EncodeOptions) -> Tensor {
    let transform = ImageTransform::test(opts.img_size);
    let (h, w) = (opts.img_size.0 as i64, opts.img_size.1 as i64);
    let feats: Vec<Tensor> = paths
        .chunks(opts.batch_size)
        .map(|chunk| {
            let images: Vec<Tensor> = chunk
                .iter()
                .filter_map(|p| load_rgb(p).ok())
                .map(|img| {
                    let mut out = vec![0f32; (3 * h * w) as usize];
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
                    transform.apply(&img, &mut rng, &mut out);
                    Tensor::from_slice(&out).view([3, h, w])
                })
                .collect();
            tch::no_grad(|| model.image_features(&Tensor::stack(&images, 0)))
        })
        .collect();
    Tensor::cat(&feats, 0)
}

/// The bits of every element of an f32 tensor.
fn bits(t: &Tensor) -> Vec<u32> {
    Vec::<f32>::try_from(&t.reshape([-1]))
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn the_image_pipeline_gives_the_features_of_each_batch_encoded_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let paths = noise_images(dir.path(), 11, &[4, 9]);
    let (model, opts) = model();
    let (got, unreadable) = embed_readable_images(&model, &paths, &opts).unwrap();
    let skipped: Vec<usize> = unreadable.iter().map(|(i, _)| *i).collect();
    assert_eq!(skipped, [4, 9]);
    assert_eq!(got.size(), [9, 32]);
    assert_eq!(bits(&got), bits(&by_hand(&model, &paths, &opts)));
}

#[test]
fn cpu_features_are_the_same_under_every_matmul_precision() {
    let dir = tempfile::tempdir().unwrap();
    let paths = noise_images(dir.path(), 5, &[]);
    let captions: Vec<String> = ["a man in a red coat", "a woman with a black bag"]
        .map(String::from)
        .to_vec();
    let (model, opts) = model();
    // A matmul large enough for oneDNN's reduced-precision paths, where the CPU has them.
    tch::manual_seed(2);
    let (a, w) = (
        Tensor::randn([512, 768], (Kind::Float, Device::Cpu)),
        Tensor::randn([768, 768], (Kind::Float, Device::Cpu)),
    );
    let features = || {
        let (images, _) = embed_readable_images(&model, &paths, &opts).unwrap();
        let texts = embed_captions(&model, &captions, &opts).unwrap();
        [images, texts, a.linear::<Tensor>(&w, None)].map(|t| bits(&t))
    };
    set_cuda_matmul_precision("highest").unwrap();
    let ieee = features();
    for precision in ["high", "medium"] {
        set_cuda_matmul_precision(precision).unwrap();
        assert!(features() == ieee, "CPU features differ under {precision}");
    }
}
