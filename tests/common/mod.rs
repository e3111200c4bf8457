//! Helpers shared by the integration tests: the binary, the Python references, tensor files,
//! small annotated datasets.
#![allow(dead_code)]
pub mod serve;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The Python that has torch (set by scripts/env.sh), else `python3`.
pub fn python() -> String {
    std::env::var("CCMA_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Runs `tests/reference/<script>` with `args`; panics with its stderr when it fails.
pub fn reference(script: &str, args: &[&str]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/reference")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .output()
        .expect("start the Python reference");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Runs the `ccma` binary.
pub fn ccma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(args)
        .output()
        .expect("run ccma")
}

/// Runs the `ccma` binary and asserts it succeeded (showing its stderr when not).
pub fn ccma_ok(args: &[&str]) -> Output {
    let out = ccma(args);
    succeeded(&out, &format!("ccma {}", args.join(" ")));
    out
}

/// Asserts that the process `what` succeeded, showing its stderr when not; its stderr.
pub fn succeeded(out: &Output, what: &str) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what}: {err}");
    err
}

/// `p` as text (the tests' paths are UTF-8), for a command line.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Makes a FIFO at `path`: named like a file, it blocks a reader until something writes.
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Every file under `dir` (path relative to `dir`, content), to compare before and after.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            match path.is_dir() {
                true => stack.push(path),
                false => {
                    let rel = path.strip_prefix(dir).unwrap().to_path_buf();
                    files.insert(rel, std::fs::read(&path).unwrap());
                }
            }
        }
    }
    files
}

/// Runs the `ccma` binary, asserts it succeeded, and parses its stdout as JSON.
pub fn ccma_json(args: &[&str]) -> serde_json::Value {
    serde_json::from_slice(&ccma_ok(args).stdout).expect("JSON on stdout")
}

/// Asserts a failed run printed exactly one error line containing `needle`, without a panic.
pub fn assert_one_line_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success: {err}"
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "panic: {err}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(
        lines[0].contains(needle),
        "error should mention {needle:?}: {err}"
    );
}

/// Writes named tensors to a safetensors file.
pub fn save(path: &Path, tensors: &[(&str, &tch::Tensor)]) {
    let named: Vec<(String, tch::Tensor)> = tensors
        .iter()
        .map(|(k, t)| (k.to_string(), t.shallow_clone()))
        .collect();
    ccma::io::safetensors::save(path, &named, &Default::default()).unwrap();
}

/// Reads a safetensors file into a map.
pub fn load(path: &Path) -> std::collections::HashMap<String, tch::Tensor> {
    tch::Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Rewrites an optimiser state (`state`: the names `Optimizer::state_tensors` gives, each under
/// `prefix`) into the earlier checkpoint layout: in place of `group_rules`, a learning-rate
/// multiplier and a weight decay per parameter element ([N] f32 each, over `params`, (name,
/// numel) pairs, in name order), by the rules of `cfg`.
pub fn to_earlier_layout(
    state: &mut std::collections::HashMap<String, tch::Tensor>,
    prefix: &str,
    params: &[(String, i64)],
    cfg: &ccma::config::OptimSection,
) {
    let mut params = params.to_vec();
    params.sort();
    let per_element = |pick: fn((f64, f64)) -> f64| {
        let parts: Vec<tch::Tensor> = params
            .iter()
            .map(|(name, numel)| {
                let rule = ccma::train::optimizer::param_rule(name, cfg);
                tch::Tensor::full([*numel], pick(rule), (tch::Kind::Float, tch::Device::Cpu))
            })
            .collect();
        tch::Tensor::cat(&parts, 0)
    };
    assert!(
        state.remove(&format!("{prefix}group_rules")).is_some(),
        "the state has group rules"
    );
    let lr_mult = per_element(|r| r.0);
    assert_eq!(lr_mult.size(), state[&format!("{prefix}exp_avg")].size());
    state.insert(format!("{prefix}lr_mult"), lr_mult);
    state.insert(format!("{prefix}weight_decay"), per_element(|r| r.1));
}

/// Writes the resumable checkpoint `from` to `to` in the earlier per-element layout
/// ([`to_earlier_layout`]), by the rules of `cfg`.
pub fn checkpoint_in_earlier_layout(from: &Path, to: &Path, cfg: &ccma::config::OptimSection) {
    let (tensors, meta) = ccma::io::safetensors::load(from).unwrap();
    let params: Vec<(String, i64)> = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optimizer."))
        .map(|(k, t)| (k.clone(), t.numel() as i64))
        .collect();
    let mut state: std::collections::HashMap<String, tch::Tensor> = tensors.into_iter().collect();
    to_earlier_layout(&mut state, "optimizer.", &params, cfg);
    let out: Vec<(String, tch::Tensor)> = state.into_iter().collect();
    ccma::io::safetensors::save(to, &out, &meta).unwrap();
}

/// Largest absolute difference between two tensors (as f64).
pub fn max_abs_diff(a: &tch::Tensor, b: &tch::Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes");
    (a.to_kind(tch::Kind::Double) - b.to_kind(tch::Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// A 20x50 JPEG (or PNG, by extension) at `path`, its folders made.
pub fn image(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_pixel(20, 50, image::Rgb([120, 30, 200]))
        .save(path)
        .unwrap();
}

/// Writes `<root>/<name>/<ann>` with `entries`, and an image for every path under `imgs/`.
pub fn fixture(
    root: &Path,
    name: &str,
    ann: &str,
    key: &str,
    entries: &[(&str, i64, &str, &[&str])],
) {
    let dir = root.join(name);
    let list: Vec<serde_json::Value> = entries
        .iter()
        .map(|(split, id, path, caps)| {
            image(&dir.join("imgs").join(path));
            serde_json::json!({ "split": split, "id": id, key: path, "captions": caps })
        })
        .collect();
    std::fs::write(dir.join(ann), serde_json::to_string(&list).unwrap()).unwrap();
}

/// Three training images of two people, two test images, one validation image.
pub const ENTRIES: [(&str, i64, &str, &[&str]); 6] = [
    ("train", 1, "a/1.jpg", &["a man in red", "red shirt man"]),
    ("train", 2, "a/2.jpg", &["a woman in blue"]),
    ("train", 1, "b/3.jpg", &["the man in red again"]),
    (
        "test",
        7,
        "b/4.jpg",
        &["test person one", "another caption"],
    ),
    ("test", 8, "b/5.jpg", &["test person two"]),
    ("val", 9, "b/6.jpg", &["val person"]),
];

/// `ENTRIES` as a CUHK-PEDES set (`reid_raw.json`, `file_path`) in a fresh folder.
pub fn cuhk_fixture() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    fixture(
        root.path(),
        "CUHK-PEDES",
        "reid_raw.json",
        "file_path",
        &ENTRIES,
    );
    root
}

/// The 32-wide from-scratch model of the training tests: 64x32 images, one block per encoder.
pub const MODEL_32: &str = "pretrain_choice: ''\nimg_size: [64, 32]\nembed_dim: 32\nvision_width: 32\n\
    vision_layers: 1\nvision_heads: 1\ntransformer_width: 32\ntransformer_layers: 1\ntransformer_heads: 1\n\
    text_length: 40\ncmt_depth: 1\ndca_heads: 4\n";

/// The from-scratch recipe under which [`MODEL_32`] learns in a few epochs: no per-group rates,
/// CLIP's temperature, a one-epoch warm-up, clean global captions, every loss term but IMAL.
pub const SCRATCH_RECIPE: &str = "lr_factor: 1.0\nbias_lr_factor: 1.0\neps: 1.0e-8\ntemperature: 0.07\n\
    warmup_epochs: 1\nwarmup_factor: 0.5\nnum_workers: 1\nglobal_caption: clean\nloss_names: sdm+itc+cmpm+id+mlm\n";

/// The 16-wide model of the tests that need a model but not its learning: 32x16 images.
pub const MODEL_16: &str = "pretrain_choice: ''\nimg_size: [32, 16]\nembed_dim: 16\nvision_width: 16\n\
    vision_layers: 1\nvision_heads: 1\nvision_patch_size: 16\ntransformer_width: 16\ntransformer_layers: 1\n\
    transformer_heads: 1\ncmt_depth: 1\ndca_heads: 2\n";

/// The 32-wide model at 32x16 with 16 tokens and the loss terms `losses`: the step tests' config.
pub fn tiny_config(losses: &str) -> ccma::config::Config {
    let sets: Vec<(String, String)> = [
        ("embed_dim", "32"),
        ("vision_width", "32"),
        ("vision_layers", "1"),
        ("vision_heads", "1"),
        ("transformer_width", "32"),
        ("transformer_layers", "1"),
        ("transformer_heads", "1"),
        ("cmt_depth", "1"),
        ("dca_heads", "4"),
        ("img_size", "[32, 16]"),
        ("text_length", "16"),
        ("loss_names", losses),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    ccma::config::Config::default()
        .with_overrides(&sets)
        .unwrap()
}

/// A config for a tiny from-scratch model on `<root>/CUHK-PEDES` (32x16 images, one epoch), written
/// to `<dir>/c.yaml`.
pub fn tiny_cuhk_config(dir: &Path, root: &Path) -> PathBuf {
    let cfg = dir.join("c.yaml");
    std::fs::write(&cfg, format!(
        "dataset_name: CUHK-PEDES\nroot_dir: {}\n{MODEL_16}text_length: 16\nbatch_size: 4\nnum_epoch: 1\n",
        root.display()
    )).unwrap();
    cfg
}

/// A checkpoint of the untrained model of `config` (2 training identities) at `path`, each of its
/// tensors passed through `map`.
pub fn tiny_checkpoint(config: &Path, path: &Path, map: impl Fn(tch::Tensor) -> tch::Tensor) {
    let cfg = ccma::config::Config::from_file(config).unwrap();
    let (vs, model) = ccma::factory::training_model(&cfg, 2, tch::Device::Cpu).unwrap();
    let tensors: Vec<(String, tch::Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, map(t.detach())))
        .collect();
    ccma::io::safetensors::save(path, &tensors, &model.config.to_metadata()).unwrap();
}

/// `ccma train --config cfg --run-dir run` with `extra` arguments, not started yet.
pub fn train_command(cfg: &Path, run: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccma"));
    cmd.args([
        "train",
        "--config",
        cfg.to_str().unwrap(),
        "--run-dir",
        run.to_str().unwrap(),
    ])
    .args(extra);
    cmd
}

/// The records of a run folder's `metrics.jsonl`, in order.
pub fn metrics(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every epoch record of `records` carries the imal set's six loss terms, each equal to the same
/// term of `reference`'s record to `rtol` relative to the reference's value; `what` names the
/// compared run in messages.
pub fn assert_losses_agree(
    records: &[serde_json::Value],
    reference: &[serde_json::Value],
    rtol: f64,
    what: &str,
) {
    assert_eq!(records.len(), reference.len(), "{what}: epochs recorded");
    for (r, rr) in records.iter().zip(reference) {
        let (l, lr) = (
            r["loss"].as_object().unwrap(),
            rr["loss"].as_object().unwrap(),
        );
        assert_eq!(lr.len(), 6, "every term of the imal set: {rr}");
        assert_eq!(l.len(), 6, "every term of the imal set: {r}");
        for (term, vr) in lr {
            let (v, vr) = (l[term].as_f64().unwrap(), vr.as_f64().unwrap());
            assert!(
                (v - vr).abs() <= rtol * vr.abs(),
                "epoch {} {term}: {what} {v}, reference {vr}",
                r["epoch"]
            );
        }
    }
}

/// A small from-scratch model with every loss term (IMAL included) on 40 / 10 / 20 generated
/// identities in `<dir>/data` (created on demand by the ranks at once), global batch 16:
/// 15 batches per epoch, the last of 2 samples (one per rank of 2), written to `<dir>/cfg.yaml`.
pub fn synth_config(dir: &Path, epochs: usize) -> PathBuf {
    synth_config_with(dir, epochs, "")
}

/// [`synth_config`] with more YAML lines.
pub fn synth_config_with(dir: &Path, epochs: usize, extra: &str) -> PathBuf {
    let cfg = format!(
        "dataset_name: TOY-PEDES\nroot_dir: {root}\nsynth_ids: [40, 10, 20]\n{MODEL_32}batch_size: 16\ntest_batch_size: 128\n\
         num_epoch: {epochs}\nlr: 2.0e-3\nwarmup_epochs: 1\nnum_workers: 1\nseed: 3\nsynth_seed: 3\nloss_names: imal\n{extra}",
        root = dir.join("data").display()
    );
    let path = dir.join("cfg.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

/// A free port on the loopback for a rendezvous.
pub fn free_port() -> String {
    ccma::dist::free_port().unwrap().to_string()
}

/// Rank `rank` of 2 started with torchrun's variables, its stderr piped.
pub fn env_rank(cmd: Command, rank: usize, port: &str) -> Child {
    env_rank_with_stdout(cmd, rank, port, Stdio::null())
}

/// [`env_rank`] with its stdout going to `stdout`.
pub fn env_rank_with_stdout(mut cmd: Command, rank: usize, port: &str, stdout: Stdio) -> Child {
    cmd.env("WORLD_SIZE", "2")
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port)
        // As --nproc-per-node sets it on this 2-core machine, so both launches compute alike.
        .env("OMP_NUM_THREADS", "1")
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `ccma args` with its stdout a pipe whose reader has already closed (and `stdin` on its
/// stdin); asserts it ended quietly with exit code 0.
pub fn with_closed_stdout(args: &[&str], stdin: &str) {
    use std::io::Write;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut child = Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may stop reading before the end of its input.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out: Output = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "ccma {}: {err}", args.join(" "));
    assert!(
        !err.contains("panicked") && !err.contains("error"),
        "ccma {}: {err}",
        args.join(" ")
    );
}

/// The feature file and pid files of one split of a generated set.
pub struct EmbeddedSplit {
    /// `ccma embed`'s output for the split's images and captions.
    pub features: PathBuf,
    /// The pid of each caption, one a line.
    pub query_pids: PathBuf,
    /// The pid of each image, one a line.
    pub gallery_pids: PathBuf,
}

/// `split` of the set in `set_dir` (its `reid_raw.json` and `imgs/`) as ccma reads it (images in
/// annotation order, every caption of each), embedded by `checkpoint` into `dir` with `ccma embed`.
pub fn embed_split(dir: &Path, checkpoint: &Path, set_dir: &Path, split: &str) -> EmbeddedSplit {
    let ann: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(set_dir.join("reid_raw.json")).unwrap())
            .unwrap();
    let (mut images, mut image_pids, mut captions, mut caption_pids) =
        (vec![], vec![], vec![], vec![]);
    for e in ann.iter().filter(|e| e["split"] == split) {
        let pid = e["id"].as_i64().unwrap().to_string();
        images.push(
            set_dir
                .join("imgs")
                .join(e["file_path"].as_str().unwrap())
                .to_str()
                .unwrap()
                .to_string(),
        );
        image_pids.push(pid.clone());
        for c in e["captions"].as_array().unwrap() {
            captions.push(c.as_str().unwrap().to_string());
            caption_pids.push(pid.clone());
        }
    }
    let write = |name: &str, lines: &[String]| {
        let p = dir.join(name);
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        p
    };
    let embedded = EmbeddedSplit {
        features: dir.join(format!("{split}_split.safetensors")),
        query_pids: write(&format!("{split}_query_pids.txt"), &caption_pids),
        gallery_pids: write(&format!("{split}_gallery_pids.txt"), &image_pids),
    };
    let caps = write(&format!("{split}_captions.txt"), &captions);
    let mut args = vec![
        "embed",
        "--checkpoint",
        s(checkpoint),
        "--captions",
        s(&caps),
    ];
    args.extend(["--out", s(&embedded.features), "--images"]);
    args.extend(images.iter().map(String::as_str));
    ccma_ok(&args);
    embedded
}
