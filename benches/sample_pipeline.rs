//! Single-thread cost of one training sample's CPU work: JPEG decode, the `img_aug` transform to
//! 384x128 (resize, flip, pad+crop, normalise, erasing), caption tokenisation and MLM masking.
//! Images are CUHK-PEDES-sized JPEGs (80-200 x 240-500 px, quality 90) with photo-like content.
//!
//! Then the whole parallel loader (`TrainLoader`, all cores, batches of 64 in pinned-free host
//! memory) over the same files: decoded, augmented, tokenised and masked into batch tensors.
//!
//! Run: `cargo bench --bench sample_pipeline [-- SAMPLES]` (default 3000 samples).
use ccma::data::mlm::{mask_tokens, MaskRates};
use ccma::data::tokenizer::Tokenizer;
use ccma::data::transforms::{load_rgb, ImageTransform};
use image::codecs::jpeg::JpegEncoder;
use image::{Rgb, RgbImage};
use prettytable::{row, Table};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::time::{Duration, Instant};

const IMAGES: usize = 64;

fn photo_like(rng: &mut ChaCha8Rng) -> RgbImage {
    let (w, h) = (rng.gen_range(80..=200u32), rng.gen_range(240..=500u32));
    let tint: [f32; 3] = [
        rng.gen_range(0.0..255.0),
        rng.gen_range(0.0..255.0),
        rng.gen_range(0.0..255.0),
    ];
    RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let body = (fx - 0.5).abs() < 0.25 && fy > 0.1;
        let base = if body {
            tint
        } else {
            [120.0 + 60.0 * fy, 130.0, 140.0 - 40.0 * fx]
        };
        let n = ((x * 7919 + y * 104729) % 41) as f32 - 20.0;
        Rgb(base.map(|v| (v + n).clamp(0.0, 255.0) as u8))
    })
}

fn caption(rng: &mut ChaCha8Rng) -> String {
    let pick = |rng: &mut ChaCha8Rng, v: &[&'static str]| *v.choose(rng).unwrap_or(&"");
    let colors = [
        "black",
        "white",
        "red",
        "dark blue",
        "grey",
        "light green",
        "brown",
        "pink",
    ];
    let tops = ["jacket", "T-shirt", "coat", "sweater", "shirt", "hoodie"];
    let bottoms = ["jeans", "shorts", "trousers", "skirt", "pants"];
    let extras = [
        "carrying a backpack",
        "holding a phone",
        "with a shoulder bag",
        "wearing glasses",
        "with long hair",
    ];
    let mut s = format!(
        "A {} wearing a {} {} and {} {}, {}.",
        pick(rng, &["woman", "man", "young girl", "person", "pedestrian"]),
        pick(rng, &colors),
        pick(rng, &tops),
        pick(rng, &colors),
        pick(rng, &bottoms),
        pick(rng, &extras)
    );
    if rng.gen_bool(0.6) {
        s.push_str(&format!(
            " The shoes are {} and the person is {}.",
            pick(rng, &colors),
            pick(rng, &extras)
        ));
    }
    s
}

fn main() {
    let samples: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3000);
    let dir = tempfile::tempdir().expect("temporary folder");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut paths = Vec::new();
    let mut jpeg_bytes = 0;
    for i in 0..IMAGES {
        let path = dir.path().join(format!("{i}.jpg"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).expect("create JPEG"));
        JpegEncoder::new_with_quality(&mut file, 90)
            .encode_image(&photo_like(&mut rng))
            .expect("encode JPEG");
        drop(file);
        jpeg_bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        paths.push(path);
    }
    let captions: Vec<String> = (0..IMAGES * 2).map(|_| caption(&mut rng)).collect();

    let transform = ImageTransform::train((384, 128), true);
    let tokenizer = Tokenizer::shared();
    let mut out = vec![0f32; 3 * 384 * 128];
    let mut times = [Duration::ZERO; 4];
    let run = |n: usize, times: &mut [Duration; 4], out: &mut [f32], rng: &mut ChaCha8Rng| {
        for i in 0..n {
            let t0 = Instant::now();
            let img = load_rgb(&paths[i % IMAGES]).expect("decode");
            let t1 = Instant::now();
            transform.apply(&img, rng, out);
            let t2 = Instant::now();
            let ids = tokenizer.encode(&captions[i % captions.len()], 77);
            let t3 = Instant::now();
            let (masked, labels) = mask_tokens(&ids, MaskRates::default(), rng);
            let t4 = Instant::now();
            std::hint::black_box((&masked, &labels, &out[0]));
            for (k, d) in [t1 - t0, t2 - t1, t3 - t2, t4 - t3].into_iter().enumerate() {
                times[k] += d;
            }
        }
    };
    run(200, &mut [Duration::ZERO; 4], &mut out, &mut rng); // warm-up (tokenizer tables, caches)
    let start = Instant::now();
    run(samples, &mut times, &mut out, &mut rng);
    let wall = start.elapsed();

    let mut table = Table::new();
    table.add_row(row!["stage", "µs / sample", "samples / s"]);
    let names = [
        "JPEG decode",
        "transform (img_aug, 384x128)",
        "tokenise (77)",
        "MLM mask",
    ];
    for (name, t) in names.iter().zip(times) {
        let us = t.as_secs_f64() * 1e6 / samples as f64;
        table.add_row(row![name, format!("{us:.1}"), format!("{:.0}", 1e6 / us)]);
    }
    let us = wall.as_secs_f64() * 1e6 / samples as f64;
    table.add_row(row![
        "total (one thread)",
        format!("{us:.1}"),
        format!("{:.0}", 1e6 / us)
    ]);
    println!(
        "{samples} samples, {IMAGES} JPEGs of 80-200 x 240-500 px (mean {:.1} KB), profile: {}",
        jpeg_bytes as f64 / IMAGES as f64 / 1024.0,
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
    );
    table.printstd();

    // The parallel loader, end to end into batch tensors.
    let train: Vec<ccma::data::annotations::TrainSample> = (0..samples)
        .map(|i| ccma::data::annotations::TrainSample {
            image: paths[i % IMAGES].clone(),
            pid: (i / 4) as i64,
            image_id: (i % IMAGES) as i64,
            caption: captions[i % captions.len()].clone(),
        })
        .collect();
    let opts = ccma::data::loader::LoaderOptions {
        batch_size: 64,
        img_size: (384, 128),
        img_aug: true,
        txt_aug: false,
        mlm: Some(MaskRates::default()),
        text_length: 77,
        sampler: ccma::data::sampler::Sampler::Random,
        seed: 1,
        num_workers: 0,
        prefetch: 4,
        pin_memory: None,
        shard: ccma::data::loader::Shard::WHOLE,
    };
    let loader = ccma::data::loader::TrainLoader::new(train, opts).expect("loader");
    let start = Instant::now();
    let mut n = 0;
    for batch in loader.epoch(1, 0) {
        n += batch.expect("batch").len() as usize;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "parallel loader, {} threads: {n} samples in {secs:.2} s = {:.0} samples/s",
        rayon::current_num_threads(),
        n as f64 / secs
    );
}
