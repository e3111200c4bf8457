//! Image decoding, resize and the train/test pipelines against an independent reference
//! (tests/reference/transforms_ref.py: Pillow for decode/resize, numpy for flip, pad, crop,
//! normalise and erasing), on photo-like test images (smooth gradients, noise, hard edges).
//! Tolerances: resize and decode 0 (Pillow's integer arithmetic is reproduced exactly; the
//! requirement is 1/255), normalised values 0 (same float32 operations).
mod common;
use ccma::data::transforms::{load_rgb, resize_bilinear, Augment, Erase, ImageTransform};
use common::python;
use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safetensors::SafeTensors;
use std::path::Path;
use std::process::Command;

/// Gradient + noise + sharp edges and a diagonal line: what a person crop looks like to a filter.
fn photo_like(width: u32, height: u32, seed: u64) -> RgbImage {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    RgbImage::from_fn(width, height, |x, y| {
        let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
        let mut p = [
            255.0 * fx,
            255.0 * fy,
            128.0 + 100.0 * (6.0 * fx + 4.0 * fy).sin(),
        ];
        if (x / 7 + y / 11) % 2 == 0 && fy > 0.5 {
            p = [20.0, 200.0, 40.0];
        }
        if (x as i32 - y as i32 / 3).abs() < 2 {
            p = [250.0, 250.0, 250.0];
        }
        let noise: f32 = rng.gen_range(-20.0..20.0);
        Rgb(p.map(|v| (v + noise).clamp(0.0, 255.0) as u8))
    })
}

fn run_reference(job: serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let job_path = dir.path().join("job.json");
    std::fs::write(&job_path, serde_json::to_vec(&job).unwrap()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/transforms_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(&job_path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the Python reference with {}: {e}", python()));
    assert!(
        out.status.success(),
        "transforms reference failed (needs Pillow, numpy, safetensors; set CCMA_PYTHON):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn tensor_bytes(st: &SafeTensors, name: &str) -> (Vec<usize>, Vec<u8>) {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("reference output lacks {name}: {e}"));
    (t.shape().to_vec(), t.data().to_vec())
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Exact equality of two float buffers, reported by first differing index and max difference.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    let max = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        first.is_none(),
        "{what}: first difference at {first:?}, max |diff| {max}"
    );
}

#[test]
fn resize_and_decode_match_pillow() {
    let dir = tempfile::tempdir().unwrap();
    // (source width, height) -> several targets: CUHK-like upscales, strong and odd downscales,
    // one axis unchanged, same size; both pass orders (vertical first where the height shrinks by
    // more than twice the width's shrink: 100x500, 97x263 -> 24x48, 200x90 -> 30x60).
    type Case = ((u32, u32), &'static [(usize, usize)]);
    let cases: [Case; 7] = [
        ((100, 300), &[(384, 128), (300, 64), (150, 100)]),
        ((500, 900), &[(384, 128), (77, 33)]),
        ((83, 241), &[(384, 128), (241, 128), (241, 83)]),
        ((128, 384), &[(384, 128), (383, 127)]),
        ((100, 500), &[(384, 128), (384, 100)]),
        ((97, 263), &[(48, 24), (200, 96)]),
        ((200, 90), &[(60, 30), (30, 150)]),
    ];
    for (i, ((w, h), targets)) in cases.iter().enumerate() {
        let png = dir.path().join(format!("img{i}.png"));
        photo_like(*w, *h, i as u64).save(&png).unwrap();
        let out = dir.path().join(format!("out{i}.safetensors"));
        run_reference(serde_json::json!({"image": png, "out": out, "resize": targets}));
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let img = load_rgb(&png).unwrap();
        assert_eq!(
            tensor_bytes(&st, "original").1,
            img.as_raw().to_vec(),
            "PNG decode"
        );
        for &(th, tw) in targets.iter() {
            let (shape, want) = tensor_bytes(&st, &format!("resize_{th}x{tw}"));
            assert_eq!(shape, vec![th, tw, 3]);
            let got = resize_bilinear(&img, th, tw);
            let max_diff = got
                .as_raw()
                .iter()
                .zip(&want)
                .map(|(&a, &b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap();
            assert_eq!(
                max_diff, 0,
                "{w}x{h} -> {tw}x{th}: max |ccma - PIL| = {max_diff}/255"
            );
        }
    }
}

#[test]
fn pipelines_match_numpy_reference() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("person.png");
    photo_like(97, 263, 11).save(&png).unwrap();
    let img = load_rgb(&png).unwrap();
    let size = (48usize, 24usize);
    let mut augments = vec![
        Augment::IDENTITY,
        Augment {
            flip: true,
            shift: (0, 0),
            erase: None,
        },
        Augment {
            flip: false,
            shift: (-10, 10),
            erase: None,
        },
        Augment {
            flip: true,
            shift: (7, -3),
            erase: Some(Erase {
                top: 5,
                left: 2,
                height: 20,
                width: 9,
            }),
        },
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let train = ImageTransform::train(size, true);
    while augments.len() < 16 {
        augments.push(train.sample(&mut rng));
    }
    assert!(
        augments.iter().any(|a| a.erase.is_some())
            && augments.iter().filter(|a| a.flip).count() > 2
    );
    let specs: Vec<serde_json::Value> = augments
        .iter()
        .enumerate()
        .map(|(i, a)| {
            serde_json::json!({"name": format!("p{i}"), "size": [size.0, size.1], "flip": a.flip,
                "shift": [a.shift.0, a.shift.1],
                "erase": a.erase.map(|e| [e.top, e.left, e.height, e.width])})
        })
        .collect();
    let out = dir.path().join("out.safetensors");
    run_reference(serde_json::json!({"image": png, "out": out, "pipelines": specs}));
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut got = vec![0f32; 3 * size.0 * size.1];
    for (i, a) in augments.iter().enumerate() {
        train.apply_with(&img, a, &mut got);
        let (shape, want) = tensor_bytes(&st, &format!("p{i}"));
        assert_eq!(shape, vec![3, size.0, size.1]);
        assert_same(&got, &f32s(&want), &format!("pipeline {a:?}"));
    }
    // The test transform is the identity augmentation.
    ImageTransform::test(size).apply(&img, &mut rng, &mut got);
    assert_same(&got, &f32s(&tensor_bytes(&st, "p0").1), "test transform");
}

#[test]
fn grey_and_alpha_images_become_rgb_like_pil() {
    let dir = tempfile::tempdir().unwrap();
    let base = photo_like(31, 45, 5);
    let grey = image::DynamicImage::ImageRgb8(base.clone()).into_luma8();
    let rgba = image::DynamicImage::ImageRgb8(base).into_rgba8();
    for (name, img) in [
        ("grey.png", image::DynamicImage::ImageLuma8(grey)),
        ("rgba.png", image::DynamicImage::ImageRgba8(rgba)),
    ] {
        let png = dir.path().join(name);
        img.save(&png).unwrap();
        let out = dir.path().join(format!("{name}.safetensors"));
        run_reference(serde_json::json!({"image": png, "out": out}));
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(
            load_rgb(&png).unwrap().as_raw().to_vec(),
            tensor_bytes(&st, "original").1,
            "{name}"
        );
    }
}

#[test]
fn jpeg_decode_is_close_to_pillow() {
    // JPEG decoders may differ by rounding in the IDCT/upsampling; require a small difference.
    let dir = tempfile::tempdir().unwrap();
    let jpg = dir.path().join("photo.jpg");
    photo_like(100, 300, 8).save(&jpg).unwrap();
    let out = dir.path().join("jpg.safetensors");
    run_reference(serde_json::json!({"image": jpg, "out": out}));
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let want = tensor_bytes(&st, "original").1;
    let got = load_rgb(&jpg).unwrap();
    let diffs: Vec<i32> = got
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let max = diffs.iter().max().copied().unwrap();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    eprintln!("JPEG decode vs Pillow: max {max}, mean {mean:.4}");
    assert!(
        max <= 8 && mean <= 0.5,
        "JPEG decode differs from Pillow: max {max}, mean {mean:.3}"
    );
}

#[test]
fn unreadable_images_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.jpg");
    let err = format!("{:#}", load_rgb(&missing).unwrap_err());
    assert!(
        err.contains("missing.jpg") && err.contains("cannot read"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.jpg");
    std::fs::write(&garbage, b"this is not an image at all").unwrap();
    let err = format!("{:#}", load_rgb(&garbage).unwrap_err());
    assert!(
        err.contains("garbage.jpg") && err.contains("cannot decode"),
        "{err}"
    );

    let empty = dir.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    assert!(format!("{:#}", load_rgb(&empty).unwrap_err()).contains("empty.png"));

    // A JPEG cut after its headers.
    let full = dir.path().join("full.jpg");
    photo_like(64, 128, 1).save(&full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let err = format!("{:#}", load_rgb(&cut).unwrap_err());
    assert!(
        err.contains("cut.jpg") && err.contains("truncated"),
        "{err}"
    );

    // Stray bytes between two header segments: libjpeg (PIL) warns and decodes; so do we.
    let dqt = bytes.windows(2).position(|w| w == [0xFF, 0xDB]).unwrap();
    let mut stray = bytes[..dqt].to_vec();
    stray.extend_from_slice(&[0x12, 0x34, 0x56, 0x78, 0x9A, 0x00]);
    stray.extend_from_slice(&bytes[dqt..]);
    let odd = dir.path().join("stray.jpg");
    std::fs::write(&odd, &stray).unwrap();
    assert_eq!(load_rgb(&odd).unwrap(), load_rgb(&full).unwrap());
}

/// 16-bit PNGs decode to exactly what Pillow's `Image.open(..).convert('RGB')` gives
/// (tests/reference/png16_ref.py writes them and Pillow's results): the high byte of colour and
/// grey + alpha samples, grey alone clipped at 255 (Pillow's mode `I;16`), transparency dropped.
#[test]
fn sixteen_bit_pngs_decode_as_pillow() {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reference/png16_ref.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(dir.path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run the Python reference with {}: {e}", python()));
    assert!(
        out.status.success(),
        "png16_ref.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(dir.path().join("pil.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for kind in ["grey", "grey_trns", "grey_alpha", "rgb", "rgb_trns", "rgba"] {
        let img = load_rgb(&dir.path().join(format!("{kind}.png"))).unwrap();
        let (shape, want) = tensor_bytes(&st, kind);
        assert_eq!(
            shape,
            vec![img.height() as usize, img.width() as usize, 3],
            "{kind}"
        );
        assert!(img.as_raw() == &want, "{kind}: pixels differ from Pillow's");
    }
}
