//! `ccma search`, `embed`, `test` on hostile input, through the binary: gallery folders with
//! FIFOs, devices, link loops, duplicate links and links out; gallery caches that were tampered
//! with; models that give NaN; a caption length beyond the model's positions; 16-bit PNGs
//! (against Pillow, tests/reference/png16_ref.py). Every crafted file is made here.
mod common;
use common::{assert_one_line_error, mkfifo, reference, succeeded, tiny_cuhk_config};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tch::{Kind, Tensor};

/// How long one command may run before it counts as blocked (they take seconds).
const BLOCKED_AFTER: Duration = Duration::from_secs(300);

/// Runs `ccma args` with the user cache folder inside `dir`; a run still going after
/// [`BLOCKED_AFTER`] is killed and fails the test.
fn run(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(args)
        .env("XDG_CACHE_HOME", dir.join("user-cache"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ccma");
    let pid = child.id() as libc::pid_t;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(BLOCKED_AFTER) {
        Ok(out) => out.expect("wait for ccma"),
        Err(_) => {
            // SAFETY: signals the child this test started, which has not been reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!(
                "ccma {} blocked: still running after {BLOCKED_AFTER:?}",
                args.join(" ")
            )
        }
    }
}

fn run_ok(dir: &Path, args: &[&str]) -> Output {
    let out = run(dir, args);
    succeeded(&out, &format!("ccma {}", args.join(" ")));
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A tiny from-scratch ccma checkpoint in `dir` (32x16 images, 16 text positions, 16-wide
/// features, CLIP's vocabulary), every weight set to `fill` when given.
fn checkpoint(dir: &Path, fill: Option<f64>) -> PathBuf {
    let cfg = ccma::config::Config::from_file(&tiny_cuhk_config(dir, dir)).unwrap();
    let (vs, model) = ccma::factory::training_model(&cfg, 2, tch::Device::Cpu).unwrap();
    let tensors: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| match fill {
            Some(v) => (k, t.detach().fill(v)),
            None => (k, t),
        })
        .collect();
    let name = if fill.is_some() { "filled" } else { "model" };
    let ck = dir.join(format!("{name}.safetensors"));
    ccma::io::safetensors::save(&ck, &tensors, &model.config.to_metadata()).unwrap();
    ck
}

/// A photo-like image at `path` (format by extension) that differs with `seed`.
fn photo(path: &Path, seed: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(24, 60, |x, y| {
        let v = |k: u32| ((x * (7 + k * seed) + y * (3 + seed) + 40 * k * seed) % 256) as u8;
        image::Rgb([v(1), v(2), v(3)])
    })
    .save(path)
    .unwrap();
}

fn link(target: impl AsRef<Path>, at: &Path) {
    std::os::unix::fs::symlink(target, at).unwrap();
}

/// The image column of `ccma search`'s table, in rank order.
fn hits(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.split('|').map(str::trim).collect::<Vec<_>>())
        .filter(|cols| cols.len() == 5 && cols[1] != "rank")
        .map(|cols| cols[3].to_string())
        .collect()
}

fn search(dir: &Path, ck: &Path, gallery: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "search",
        "--checkpoint",
        ck.to_str().unwrap(),
        "--gallery",
        gallery.to_str().unwrap(),
        "--top-k",
        "10",
    ];
    args.extend(extra);
    args.push("a man in a red coat");
    run(dir, &args)
}

/// Four distinct photos in `gallery`: a.png, b.jpg, sub/c.png, sub/d.jpeg (sorted order).
fn four_photos(gallery: &Path) -> Vec<String> {
    let names = ["a.png", "b.jpg", "sub/c.png", "sub/d.jpeg"];
    for (i, n) in names.iter().enumerate() {
        photo(&gallery.join(n), i as u32 + 1);
    }
    names
        .iter()
        .map(|n| gallery.join(n).display().to_string())
        .collect()
}

/// A gallery folder lists each regular image file once, under its path without links: a FIFO,
/// a link to /dev/zero, links out of the folder and broken links are left out by name; links to
/// `.`, to a parent and to a sibling folder, and a hard link, neither loop nor repeat a photo.
#[test]
fn a_gallery_folder_lists_each_regular_image_once_and_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), None);
    let gallery = dir.path().join("gallery");
    let want = four_photos(&gallery);
    std::fs::hard_link(gallery.join("a.png"), gallery.join("sub/hard.png")).unwrap();
    link(".", &gallery.join("self1"));
    link(".", &gallery.join("self2"));
    link("..", &gallery.join("sub/up"));
    link("sub", &gallery.join("alias"));
    link("a.png", &gallery.join("again.png"));
    mkfifo(&gallery.join("fifo.jpg"));
    link("/dev/zero", &gallery.join("zero.png"));
    photo(&dir.path().join("elsewhere.png"), 9);
    link(dir.path().join("elsewhere.png"), &gallery.join("out.png"));
    link("missing.png", &gallery.join("broken.png"));

    let out = search(dir.path(), &ck, &gallery, &[]);
    let err = stderr(&out);
    assert!(out.status.success(), "{err}");
    let mut got = hits(&out);
    got.sort();
    assert_eq!(got, want, "each photo once: {err}");
    for (name, why) in [
        ("fifo.jpg", "a FIFO, not a regular file"),
        ("zero.png", "a link leading out of the gallery folder"),
        ("out.png", "a link leading out of the gallery folder"),
        ("broken.png", "No such file"),
    ] {
        let line = format!("left out {}: {why}", gallery.join(name).display());
        assert!(err.contains(&line), "{line:?} in {err}");
    }

    // `embed --image-dir` walks the same way.
    let emb = dir.path().join("emb.safetensors");
    run_ok(
        dir.path(),
        &[
            "embed",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--image-dir",
            gallery.to_str().unwrap(),
            "--out",
            emb.to_str().unwrap(),
        ],
    );
    let (tensors, meta) = ccma::io::safetensors::load(&emb).unwrap();
    assert_eq!(tensors[0].1.size(), [4, 16]);
    let paths: Vec<String> = serde_json::from_str(&meta["images"]).unwrap();
    assert_eq!(paths, want);
}

/// An image named on the command line or in a feature file that is a FIFO, a device or larger
/// than the image limit is refused by name (exit 2, nothing written), without blocking.
#[test]
fn image_files_that_are_not_photos_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = checkpoint(d, None);
    let fifo = d.join("fifo.jpg");
    mkfifo(&fifo);
    let zero = d.join("zero.png");
    link("/dev/zero", &zero);
    let big = d.join("big.png");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(ccma::io::MAX_IMAGE_BYTES + 1)
        .unwrap();
    let out_file = d.join("emb.safetensors");
    for (image, why) in [
        (&fifo, "is a FIFO, expected a regular file"),
        (&zero, "is a character device, expected a regular file"),
        (&big, "is larger than the 64 MiB limit for image files"),
    ] {
        let out = run(
            d,
            &[
                "embed",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--images",
                image.to_str().unwrap(),
                "--out",
                out_file.to_str().unwrap(),
            ],
        );
        assert_one_line_error(&out, &format!("image {} {why}", image.display()));
        assert_eq!(out.status.code(), Some(2));
        assert!(!out_file.exists());
    }

    // A feature file's image list is read for the contact sheet.
    let photo_path = d.join("p.png");
    photo(&photo_path, 1);
    let features = d.join("features.safetensors");
    let meta = std::collections::HashMap::from([(
        "images".to_string(),
        serde_json::to_string(&[&photo_path, &fifo]).unwrap(),
    )]);
    let rows = Tensor::eye(2, (Kind::Float, tch::Device::Cpu)).repeat([1, 8]);
    ccma::io::safetensors::save(&features, &[("image_features".into(), rows)], &meta).unwrap();
    let sheet = d.join("sheet.png");
    let out = search(d, &ck, &features, &["--out", sheet.to_str().unwrap()]);
    assert_one_line_error(
        &out,
        &format!(
            "image {} is a FIFO, expected a regular file",
            fifo.display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!sheet.exists());
}

/// A model that gives NaN is refused wherever its features would be ranked or written: the
/// gallery folder it embeds (nothing cached), the query against a feature file, `embed`'s output.
#[test]
fn nan_features_from_a_model_are_never_ranked_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let nan = checkpoint(d, Some(f64::NAN));
    let gallery = d.join("gallery");
    four_photos(&gallery);
    let out = search(d, &nan, &gallery, &[]);
    assert_one_line_error(
        &out,
        &format!(
            "{}: the model gives 64 NaN or infinite feature values on gallery folder {}",
            nan.display(),
            gallery.display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!gallery.join(".ccma-cache/gallery.safetensors").exists());

    let features = d.join("features.safetensors");
    let meta = std::collections::HashMap::from([(
        "images".to_string(),
        serde_json::to_string(&["a.png", "b.png"]).unwrap(),
    )]);
    let rows = Tensor::ones([2, 16], (Kind::Float, tch::Device::Cpu));
    ccma::io::safetensors::save(&features, &[("image_features".into(), rows)], &meta).unwrap();
    let out = search(d, &nan, &features, &[]);
    assert_one_line_error(
        &out,
        &format!(
            "{}: the model gives 16 NaN or infinite feature values on the query",
            nan.display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));

    let emb = d.join("emb.safetensors");
    let out = run(
        d,
        &[
            "embed",
            "--checkpoint",
            nan.to_str().unwrap(),
            "--images",
            gallery.join("a.png").to_str().unwrap(),
            "--out",
            emb.to_str().unwrap(),
        ],
    );
    assert_one_line_error(&out, "the model gives 16 NaN or infinite feature values");
    assert_eq!(out.status.code(), Some(2));
    assert!(!emb.exists());
}

/// A gallery cache is used only when it is valid for the gallery and model; a tampered one is
/// ignored with a warning saying why, rebuilt, and the results are those of a fresh embedding.
#[test]
fn a_tampered_gallery_cache_is_ignored_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = checkpoint(d, None);
    let gallery = d.join("gallery");
    four_photos(&gallery);
    let fresh = run_ok(
        d,
        &[
            "search",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--gallery",
            gallery.to_str().unwrap(),
            "--top-k",
            "10",
            "a man in a red coat",
        ],
    );
    let cache = gallery.join(".ccma-cache/gallery.safetensors");
    let (tensors, meta) = ccma::io::safetensors::load(&cache).unwrap();
    let features = tensors[0].1.shallow_clone();
    assert_eq!(features.size(), [4, 16]);

    type Tamper = fn(&Tensor, &mut std::collections::HashMap<String, String>) -> Tensor;
    let with_nan: Tamper = |f, _| {
        let f = f.copy();
        let _ = f.get(2).fill_(f64::NAN);
        f
    };
    let out_of_range: Tamper = |f, m| {
        m.insert("kept".into(), "[0,1,2,99]".into());
        f.copy()
    };
    let repeated: Tamper = |f, m| {
        m.insert("kept".into(), "[0,0,1,2]".into());
        f.copy()
    };
    let negative: Tamper = |f, m| {
        m.insert("kept".into(), "[-1,0,1,2]".into());
        f.copy()
    };
    let other_files: Tamper = |f, m| {
        let mut names: Vec<String> = serde_json::from_str(&m["files"]).unwrap();
        names.reverse();
        m.insert("files".into(), serde_json::to_string(&names).unwrap());
        f.copy()
    };
    let f64_rows: Tamper = |f, _| f.to_kind(Kind::Double);
    let narrow: Tamper = |f, _| f.narrow(1, 0, 8).copy();
    let short: Tamper = |f, _| f.narrow(0, 0, 3).copy();
    let cases: [(&str, Tamper); 8] = [
        (
            "tensor `image_features` has 16 NaN or infinite values",
            with_nan,
        ),
        (
            "index 99 in `kept` is out of range for 4 files",
            out_of_range,
        ),
        (
            "the indices in `kept` are not strictly increasing",
            repeated,
        ),
        ("metadata `kept` is not a JSON list of indices", negative),
        ("its file list is not the gallery's", other_files),
        (
            "tensor `image_features` is Double [4, 16], expected f32 [4, 16]",
            f64_rows,
        ),
        (
            "tensor `image_features` is Float [4, 8], expected f32 [4, 16]",
            narrow,
        ),
        (
            "tensor `image_features` is Float [3, 16], expected f32 [4, 16]",
            short,
        ),
    ];
    let expect_rebuilt = |out: &Output, why: &str| {
        let err = stderr(out);
        assert!(out.status.success(), "{why}: {err}");
        let line = format!("ignoring gallery cache {}: {why}", cache.display());
        assert!(err.contains(&line), "{line:?} in {err}");
        assert!(err.contains("; the gallery is embedded again"), "{err}");
        assert_eq!(
            out.stdout, fresh.stdout,
            "{why}: results as embedded afresh"
        );
        let again = run_ok(
            d,
            &[
                "search",
                "--checkpoint",
                ck.to_str().unwrap(),
                "--gallery",
                gallery.to_str().unwrap(),
                "--top-k",
                "10",
                "a man in a red coat",
            ],
        );
        assert!(
            stderr(&again).contains("gallery features from"),
            "{why}: rebuilt cache is used"
        );
        assert_eq!(again.stdout, fresh.stdout);
    };
    for (why, tamper) in cases {
        let mut m = meta.clone();
        let f = tamper(&features, &mut m);
        ccma::io::safetensors::save(&cache, &[("image_features".into(), f)], &m).unwrap();
        expect_rebuilt(&search(d, &ck, &gallery, &[]), why);
    }
    std::fs::write(&cache, b"not a safetensors file").unwrap();
    expect_rebuilt(
        &search(d, &ck, &gallery, &[]),
        &format!(
            "{}: not a safetensors file (its header length field says",
            cache.display()
        ),
    );
    std::fs::remove_file(&cache).unwrap();
    mkfifo(&cache);
    expect_rebuilt(&search(d, &ck, &gallery, &[]), "a FIFO, not a regular file");
}

/// A feature file given as the gallery is refused on one line, exit 2, when its rows are not
/// finite f32 rows with one image path each.
#[test]
fn an_invalid_feature_file_gallery_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = checkpoint(d, None);
    let file = d.join("features.safetensors");
    let images = |n: usize| {
        let names: Vec<String> = (0..n).map(|i| format!("{i}.png")).collect();
        std::collections::HashMap::from([(
            "images".to_string(),
            serde_json::to_string(&names).unwrap(),
        )])
    };
    let rows = || Tensor::ones([3, 16], (Kind::Float, tch::Device::Cpu));
    let with_nan = rows();
    let _ = with_nan.get(1).get(4).fill_(f64::NAN);
    for (features, meta, why) in [
        (
            with_nan,
            images(3),
            "tensor `image_features` has 1 NaN or infinite values",
        ),
        (rows(), images(2), "2 image paths for 3 feature rows"),
        (
            rows().to_kind(Kind::Half),
            images(3),
            "tensor `image_features` has dtype Half, expected f32",
        ),
        (rows(), images(0), "has no `images` metadata"),
    ] {
        ccma::io::safetensors::save(&file, &[("image_features".into(), features)], &meta).unwrap();
        let out = search(d, &ck, &file, &[]);
        assert_one_line_error(&out, why);
        assert_eq!(out.status.code(), Some(2), "{why}");
    }
}

/// `ccma test` with captions longer than the model's positions is a usage error naming both,
/// before any work (no results written).
#[test]
fn a_text_length_beyond_the_model_positions_is_a_usage_error() {
    let root = common::cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint(dir.path(), None);
    let out = run(
        dir.path(),
        &[
            "test",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--dataset",
            "CUHK-PEDES",
            "--root-dir",
            root.path().to_str().unwrap(),
            "--set",
            "text_length=40",
            "--set",
            "img_size=[32, 16]",
        ],
    );
    assert_one_line_error(
        &out,
        &format!(
            "text_length 40 is longer than the 16 positions (context length) of the model in {}",
            ck.display()
        ),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(!std::fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("_results.")));
}

/// 16-bit PNGs (grey, grey with tRNS, grey + alpha, RGB, RGB with tRNS, RGBA) embed exactly as
/// the 8-bit RGB images Pillow's `convert('RGB')` makes of them.
#[test]
fn sixteen_bit_pngs_embed_as_pillow_decodes_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ck = checkpoint(d, None);
    reference("png16_ref.py", &[d.to_str().unwrap()]);
    let kinds = ["grey", "grey_trns", "grey_alpha", "rgb", "rgb_trns", "rgba"];
    let embed = |suffix: &str| {
        let out = d.join(format!("emb{suffix}.safetensors"));
        let images: Vec<String> = kinds
            .iter()
            .map(|k| d.join(format!("{k}{suffix}")).display().to_string())
            .collect();
        let mut args = vec![
            "embed",
            "--checkpoint",
            ck.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--images",
        ];
        args.extend(images.iter().map(String::as_str));
        run_ok(d, &args);
        ccma::io::safetensors::load(&out).unwrap().0.remove(0).1
    };
    let ours = embed(".png");
    let pillow = embed(".pil.png");
    for (i, kind) in kinds.iter().enumerate() {
        assert!(
            ours.get(i as i64).equal(&pillow.get(i as i64)),
            "{kind}: features differ from Pillow's decoding"
        );
    }
}
