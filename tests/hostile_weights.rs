//! Weight and checkpoint files from elsewhere, through the binary: nothing in them runs (no
//! TorchScript), nothing they declare sizes an allocation unchecked, every model size they give
//! goes through the YAML keys' ranges, attention heads are read from the files beside them or
//! refused, and every failure is one line with exit code 2 and nothing written. The crafted files
//! are made here or by tests/reference/hostile_weights.py. The binary runs with its data segment
//! limited to 4 GiB, so a file that would exhaust memory fails fast instead of taking the machine.
mod common;
use common::*;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tch::{Device, Kind, Tensor};

/// What `__setstate__` of tests/reference/hostile_weights.py's `setstate.pt` prints.
const MARKER: &str = "SETSTATE-RAN-7f3a";

/// `ccma args` with at most 4 GiB of data memory.
fn limited(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ccma"));
    cmd.args(args);
    // SAFETY: setrlimit is async-signal-safe; it only lowers this child's own limit.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            match libc::setrlimit(libc::RLIMIT_DATA, &lim) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    cmd.output().expect("run ccma")
}

/// Asserts `out` is one error line containing `needle`, with exit code 2.
fn refused(out: &Output, needle: &str) {
    assert_one_line_error(out, needle);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ccma export --format irra weights <dir>/out.safetensors`: its output and the path it writes.
fn export(weights: &Path, dir: &Path) -> (Output, PathBuf) {
    let out = dir.join("out.safetensors");
    (
        limited(&["export", "--format", "irra", s(weights), s(&out)]),
        out,
    )
}

fn hostile() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    reference("hostile_weights.py", &[s(dir.path())]);
    dir
}

/// A from-scratch tiny model (`width` wide, one block per tower, `heads` heads in both, 32x16
/// input) saved as a ccma checkpoint at `path`, its metadata's JSON passed through `edit`.
fn checkpoint(path: &Path, width: i64, heads: i64, edit: impl Fn(&mut serde_json::Value)) {
    let width = width.to_string();
    let set: Vec<(String, String)> = [
        ("pretrain_choice", "''"),
        ("img_size", "[32, 16]"),
        ("embed_dim", "16"),
        ("vision_width", &width),
        ("vision_layers", "1"),
        ("vision_patch_size", "16"),
        ("transformer_width", &width),
        ("transformer_layers", "1"),
        ("text_length", "16"),
        ("cmt_depth", "1"),
        ("dca_heads", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .chain([
        ("vision_heads".to_string(), heads.to_string()),
        ("transformer_heads".to_string(), heads.to_string()),
    ])
    .collect();
    let cfg = ccma::config::Config::default()
        .with_overrides(&set)
        .unwrap();
    let (vs, model) = ccma::factory::training_model(&cfg, 2, Device::Cpu).unwrap();
    let mut meta = model.config.to_metadata();
    let key = ccma::model::config::METADATA_KEY;
    let mut json: serde_json::Value = serde_json::from_str(&meta[key]).unwrap();
    edit(&mut json);
    meta.insert(key.to_string(), json.to_string());
    let tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    ccma::io::safetensors::save(path, &tensors, &meta).unwrap();
}

/// `ccma test --checkpoint ck --json` on `ENTRIES` as CUHK-PEDES.
fn test_on_fixture(ck: &Path, root: &Path) -> Output {
    limited(&[
        "test",
        "--checkpoint",
        s(ck),
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        s(root),
        "--json",
    ])
}

/// `ccma embed` of one image at 32x16 with `weights` (`--checkpoint` or `--pretrained`).
fn embed(flag: &str, weights: &Path, dir: &Path, out: &Path) -> Output {
    let img = dir.join("img.png");
    if !img.exists() {
        image(&img);
    }
    limited(&[
        "embed",
        flag,
        s(weights),
        "--img-size",
        "32x16",
        "--images",
        s(&img),
        "--out",
        s(out),
    ])
}

/// A TorchScript archive is read without TorchScript: OpenAI's layout gives every tensor of
/// the module's state dict (fp16 and fp32, a buffer) as `torch.jit.load` does, and a class with
/// its own `__setstate__` is refused without that code running.
#[test]
fn torchscript_archives_run_no_code() {
    let dir = hostile();
    let (out, written) = export(&dir.path().join("archive.pt"), dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (got, want) = (
        load(&written),
        load(&dir.path().join("archive_state.safetensors")),
    );
    assert_eq!(got.len(), want.len());
    for (k, t) in &want {
        let g = &got[&format!("base_model.{k}")];
        let kind = if t.is_floating_point() {
            Kind::Float
        } else {
            t.kind()
        };
        assert_eq!(g.kind(), kind, "{k}");
        assert!(g.equal(&t.to_kind(kind)), "{k}");
    }
    let root = cuhk_fixture();
    let ck = dir.path().join("setstate.pt");
    let out = test_on_fixture(&ck, root.path());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(MARKER), "the archive's code ran: {all}");
    refused(
        &out,
        "restoring it would run the class's own code, which is never run",
    );
    assert!(!dir.path().join("test_results.json").exists());
}

/// A storage entry that holds fewer bytes than its headers declare, a deflate bomb, a view
/// with stride 0 over terabytes, nesting 200,000 deep and a memo that doubles 40 times: each is
/// refused by the check it fails, and nothing is written.
#[test]
fn torch_save_files_are_bounded_by_their_size() {
    let dir = hostile();
    for (file, needle) in [
        (
            "short.pth",
            "entry tmp/data/0 holds 8 bytes but declares 4096",
        ),
        ("bomb.pth", "entry tmp/data/0 would take 67108864 bytes"),
        (
            "stride0.pth",
            "stride [0, 0], offset 0 would take 4398046511104 bytes",
        ),
        ("deep.pth", "values nest deeper than 100 levels"),
        ("memo.pth", "the pickle's values would take"),
    ] {
        let (out, written) = export(&dir.path().join(file), dir.path());
        refused(&out, needle);
        assert!(!written.exists(), "{file}: nothing written");
    }
}

/// Sizes from a checkpoint's metadata and from tensor shapes go through the YAML keys' ranges
/// and are checked against the tensors before a model is built.
#[test]
fn sizes_from_files_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let root = cuhk_fixture();
    let ck = dir.path().join("ck.safetensors");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(Edit, &str); 4] = [
        (
            |j| j["clip"]["vision_heads"] = 0.into(),
            "invalid value for `vision_heads`: 0 (expected a number from 1",
        ),
        (
            |j| j["clip"]["vision_layers"] = 100_000_000.into(),
            "invalid value for `vision_layers`: 100000000 (expected a number from 1 to 256)",
        ),
        (
            |j| j["clip"]["vision_layers"] = 2.into(),
            "its description says `vision_layers` 2, its tensors 1",
        ),
        (
            |j| j["num_classes"] = 0.into(),
            "invalid value for `num_classes`: 0",
        ),
    ];
    for (edit, needle) in cases {
        checkpoint(&ck, 16, 1, edit);
        refused(&test_on_fixture(&ck, root.path()), needle);
        assert!(!dir.path().join("test_results.json").exists());
    }
    // A 1-d projection where CLIP has a matrix, in weights without a description.
    let mut named: Vec<(String, Tensor)> = Tensor::read_safetensors(&ck).unwrap();
    for (k, t) in named.iter_mut() {
        if k == "base_model.text_projection" {
            *t = t.get(0);
        }
    }
    let bare = dir.path().join("bare.safetensors");
    ccma::io::safetensors::save(&bare, &named, &Default::default()).unwrap();
    std::fs::write(
        dir.path().join("configs.yaml"),
        "vision_heads: 1\ntransformer_heads: 1\n",
    )
    .unwrap();
    let out = dir.path().join("emb.safetensors");
    refused(
        &embed("--pretrained", &bare, dir.path(), &out),
        "key `base_model.text_projection` has shape [16]: expected 2 dimensions",
    );
    assert!(!out.exists());
}

/// An IRRA-style best.pth is read as IRRA's code reads it, with width / 64 attention heads,
/// unless the configs.yaml beside it records others; widths IRRA's code could not have built
/// are refused, not guessed. `export --format irra` refuses a model whose heads IRRA could not
/// read back, and names the DCA tensors its layout cannot hold.
#[test]
fn heads_follow_irras_rule_unless_recorded_beside() {
    let dir = tempfile::tempdir().unwrap();
    let embedded = |out: Output| {
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
    };
    let as_pth = |width: i64, heads: i64, name: &str| {
        let ck = dir.path().join(format!("{name}.safetensors"));
        checkpoint(&ck, width, heads, |_| {});
        let run = dir.path().join(name);
        std::fs::create_dir(&run).unwrap();
        let pth = run.join("best.pth");
        reference("hostile_weights.py", &["pth", s(&ck), s(&pth)]);
        let want = dir.path().join(format!("{name}.want.safetensors"));
        embedded(embed("--checkpoint", &ck, dir.path(), &want));
        (ck, run, pth, load(&want))
    };
    let features = |pth: &Path, run: &Path| {
        let out = run.join("emb.safetensors");
        let _ = std::fs::remove_file(&out);
        embedded(embed("--pretrained", pth, run, &out));
        load(&out)["image_features"].shallow_clone()
    };
    // 128 wide with 2 heads: IRRA's own rule, no file needed.
    let (ck, run, pth, want) = as_pth(128, 2, "irra2");
    assert!(max_abs_diff(&features(&pth, &run), &want["image_features"]) < 1e-6);
    let (out, written) = export(&ck, dir.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("not written: dca_image (") && said.contains("dca_text ("),
        "{said}"
    );
    assert!(load(&written).keys().all(|k| !k.starts_with("dca_")));
    std::fs::remove_file(&written).unwrap();
    // 128 wide with 4 heads: read with 2 as IRRA would, unless configs.yaml says 4.
    let (ck, run, pth, want) = as_pth(128, 4, "irra4");
    assert!(max_abs_diff(&features(&pth, &run), &want["image_features"]) > 1e-4);
    std::fs::write(
        run.join("configs.yaml"),
        "vision_heads: 4\ntransformer_heads: 4\n",
    )
    .unwrap();
    assert!(max_abs_diff(&features(&pth, &run), &want["image_features"]) < 1e-6);
    let (out, written) = export(&ck, dir.path());
    refused(&out, "are not its widths (128, 128) / 64, the only heads IRRA's code builds: IRRA could not read it back");
    assert!(!written.exists());
    // 16 wide: IRRA's code gives it no heads; refused, naming the file that would tell.
    let (_, run, pth, _) = as_pth(16, 2, "irra16");
    let out = run.join("emb.safetensors");
    refused(
        &embed("--pretrained", &pth, &run, &out),
        "are not both multiples of 64 (the code that writes this layout gives width / 64 heads): put its run's configs.yaml with `vision_heads` and `transformer_heads` beside it",
    );
    assert!(!out.exists());
}

/// Hugging Face weights: zero heads in config.json are refused by the YAML key's range, and
/// without config.json the heads of a model other than ViT-B/16 are refused, naming the file.
#[test]
fn hugging_face_sizes_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    reference("hf_ref.py", &[s(dir.path())]);
    let hf = dir.path().join("hf");
    let cfg = hf.join("config.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    json["vision_config"]["num_attention_heads"] = 0.into();
    std::fs::write(&cfg, json.to_string()).unwrap();
    let out = dir.path().join("emb.safetensors");
    refused(
        &embed("--pretrained", &hf, dir.path(), &out),
        "invalid value for `vision_heads`: 0",
    );
    std::fs::remove_file(&cfg).unwrap();
    refused(
        &embed(
            "--pretrained",
            &hf.join("model.safetensors"),
            dir.path(),
            &out,
        ),
        "put the model's config.json beside it",
    );
    assert!(!out.exists());
}

/// `last.safetensors`, a training state, is evaluated as the model it holds: after the last
/// epoch it scores exactly as `best.safetensors` of the same step.
#[test]
fn a_training_state_is_evaluated_as_its_model() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let run = dir.path().join("run");
    let out = train_command(&cfg, &run, &[]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let score = |name: &str| {
        let o = limited(&["test", "--checkpoint", s(&run.join(name)), "--json"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["t2i"].clone()
    };
    assert_eq!(score("last.safetensors"), score("best.safetensors"));
}

/// A broken safetensors file says which check failed; a file in no layout says which it expects.
#[test]
fn safetensors_failures_name_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    save(
        &good,
        &[("a", &Tensor::ones([3, 4], (Kind::Float, Device::Cpu)))],
    );
    let bytes = std::fs::read(&good).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap().to_string();
    let with_header = |h: &str, data: &[u8]| {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend(h.as_bytes());
        b.extend(data);
        b
    };
    let data = &bytes[8 + n..];
    let mut long = bytes.clone();
    long[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (long, "its header length field says 1099511627776 bytes"),
        (
            with_header(&header.replacen(':', ";", 1), data),
            "its header is not a JSON object",
        ),
        (
            with_header(&header.replace("F32", "F8_E4M3"), data),
            "dtype \"F8_E4M3\" is not one ccma reads",
        ),
        (
            with_header(&header.replace("[3,4]", "[3,5]"), data),
            "shape [3, 5] of F32 needs 60 bytes",
        ),
        (
            bytes[..bytes.len() - 4].to_vec(),
            "lie outside the 44 bytes of data (truncated or corrupt)",
        ),
        (
            b"not weights at all".to_vec(),
            "is not a weights file (expected a ccma or Hugging Face safetensors file",
        ),
    ];
    let out = dir.path().join("emb.safetensors");
    for (i, (b, needle)) in cases.into_iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.safetensors"));
        std::fs::write(&p, b).unwrap();
        refused(&embed("--pretrained", &p, dir.path(), &out), needle);
        assert!(!out.exists());
    }
}
