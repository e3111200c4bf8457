//! The network against an independent PyTorch build of it (tests/reference/model_ref.py): image
//! and text features, MLM logits and DCA outputs from a safetensors checkpoint and from an OpenAI
//! style TorchScript archive (with the positional grid resized); a DCA gradient check; and the
//! weight-file errors.
mod common;
use ccma::config::Config;
use common::*;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};

/// The MLM logits of the reference's masked captions (positions taken from its [B, L] labels).
fn mlm_logits(model: &ccma::model::Ccma, img: &Tensor, io: &HashMap<String, Tensor>) -> Tensor {
    let labels = Vec::<i64>::try_from(&io["mlm_labels"].reshape([-1])).unwrap();
    let (positions, targets) = ccma::data::batch::masked_positions(&labels);
    assert_eq!(positions.len(), 6);
    let (positions, targets) = (Tensor::from_slice(&positions), Tensor::from_slice(&targets));
    let masked = ccma::model::Masked {
        ids: &io["mlm_ids"],
        positions: &positions,
        labels: &targets,
    };
    model.mlm(img, masked)
}

fn config(dir: &std::path::Path, pretrained: Option<&str>) -> Config {
    let sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut set: Vec<(String, String)> = sizes
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "num_classes")
        .map(|(k, v)| (k.clone(), v.to_string()))
        .collect();
    if let Some(p) = pretrained {
        set.push(("pretrained".into(), p.into()));
    }
    Config::default().with_overrides(&set).unwrap()
}

/// Every parameter of `vs` from `path`, none missing or extra.
fn load_strict(vs: &mut tch::nn::VarStore, path: &std::path::Path) -> anyhow::Result<()> {
    let w = ccma::model::weights::read(path)?;
    ccma::model::weights::copy_into(vs, &w.tensors, &[], &[], (0, 0), path)
}

fn generate() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    reference("model_ref.py", &[dir.path().to_str().unwrap()]);
    dir
}

fn close(name: &str, ours: &Tensor, want: &Tensor) {
    let d = max_abs_diff(ours, want);
    assert!(d < 1e-4, "{name}: max abs diff {d}");
}

#[test]
fn whole_model_matches_reference() {
    let dir = generate();
    let io = load(&dir.path().join("io.safetensors"));
    let cfg = config(dir.path(), None);
    let (mut vs, model) = ccma::factory::training_model(&cfg, 7, Device::Cpu).unwrap();
    load_strict(&mut vs, &dir.path().join("model.safetensors")).unwrap();
    let _guard = tch::no_grad_guard();
    close("f_i", &model.image_features(&io["images"]), &io["f_i"]);
    close("f_t", &model.text_features(&io["ids"]), &io["f_t"]);
    let img = model.encode_image(&io["images"]);
    close(
        "mlm_logits",
        &mlm_logits(&model, &img, &io),
        &io["mlm_logits"],
    );
    let (g_i, g_t) = model.dca(&img, &model.encode_text(&io["ids"]), &io["ids"]);
    close("g_i", &g_i, &io["g_i"]);
    close("g_t", &g_t, &io["g_t"]);
}

/// OpenAI's archive, with its size entries as buffers and as parameters, at another input size.
#[test]
fn torchscript_archive_loads_with_resized_grid() {
    let dir = generate();
    let io = load(&dir.path().join("io.safetensors"));
    for name in ["clip.pt", "clip_params.pt"] {
        let archive = dir.path().join(name);
        let cfg = config(dir.path(), Some(archive.to_str().unwrap()));
        let (_vs, model) = ccma::factory::training_model(&cfg, 7, Device::Cpu).unwrap();
        let _guard = tch::no_grad_guard();
        close(
            &format!("{name} f_i"),
            &model.image_features(&io["images"]),
            &io["clip_f_i"],
        );
        close(
            &format!("{name} f_t"),
            &model.text_features(&io["ids"]),
            &io["clip_f_t"],
        );
    }
}

/// IRRA's `best.pth` (fp16 and fp32 weights, training state beside, CCMA's extra modules):
/// the model's sizes come from the weights, and its features and MLM logits are the reference's.
#[test]
fn irra_checkpoint_gives_the_reference_outputs() {
    use ccma::factory::{inference_model, WeightsSource};
    let dir = generate();
    let io = load(&dir.path().join("io.safetensors"));
    let source = WeightsSource::Checkpoint(dir.path().join("irra_best.pth"));
    let m = inference_model(&source, Some((64, 32)), Device::Cpu).unwrap();
    let (c, model) = (&m.model.config, &m.model);
    assert_eq!(
        (
            c.cmt_depth,
            c.num_classes,
            c.clip.context_length,
            c.clip.vocab_size
        ),
        (1, 7, 24, 1000)
    );
    let _guard = tch::no_grad_guard();
    close("f_i", &model.image_features(&io["images"]), &io["f_i"]);
    close("f_t", &model.text_features(&io["ids"]), &io["f_t"]);
    let img = model.encode_image(&io["images"]);
    close(
        "mlm_logits",
        &mlm_logits(model, &img, &io),
        &io["mlm_logits"],
    );
    // As pretrained weights: every module it has is loaded, whatever its depth.
    let pth = dir.path().join("irra_best.pth");
    let source = WeightsSource::Pretrained(pth.clone());
    let p = inference_model(&source, Some((64, 32)), Device::Cpu).unwrap();
    close(
        "f_t as pretrained",
        &p.model.text_features(&io["ids"]),
        &io["f_t"],
    );
    // As initial weights for another dataset: the classifier has that dataset's identities.
    let cfg = config(dir.path(), Some(pth.to_str().unwrap()));
    let (_vs, trained) = ccma::factory::training_model(&cfg, 5, Device::Cpu).unwrap();
    assert_eq!(
        (trained.config.num_classes, trained.config.cmt_depth),
        (5, 1)
    );
}

/// `ccma export --format irra` loads into an IRRA-shaped PyTorch model with a strict
/// `load_state_dict` and gives the same features (1e-5); exporting IRRA's own best.pth through the
/// binary gives the same tensors.
#[test]
fn export_for_irra_loads_strictly_and_gives_the_same_features() {
    let dir = generate();
    let out = dir.path().join("exported.safetensors");
    let model = dir.path().join("model.safetensors");
    ccma_ok(&[
        "export",
        "--format",
        "irra",
        model.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    let diffs: serde_json::Value =
        serde_json::from_str(&reference("export_ref.py", &[out.to_str().unwrap()])).unwrap();
    for (name, d) in diffs.as_object().unwrap() {
        assert!(d.as_f64().unwrap() < 1e-5, "{name}: {d}");
    }
    let again = dir.path().join("from_pth.safetensors");
    let pth = dir.path().join("irra_best.pth");
    ccma_ok(&[
        "export",
        "--format",
        "irra",
        pth.to_str().unwrap(),
        again.to_str().unwrap(),
    ]);
    let (a, b) = (load(&out), load(&again));
    assert_eq!(a.len(), b.len());
    for (k, t) in &a {
        assert!(t.equal(&b[k]), "{k}");
    }
}

#[test]
fn weight_file_errors_name_the_key_and_shapes() {
    let dir = generate();
    let cfg = config(dir.path(), None);
    let good = dir.path().join("model.safetensors");
    let try_load = |path: &std::path::Path| {
        let (mut vs, _m) = ccma::factory::training_model(&cfg, 7, Device::Cpu).unwrap();
        format!("{:#}", load_strict(&mut vs, path).unwrap_err())
    };
    let e = try_load(&dir.path().join("missing.safetensors"));
    assert!(
        e.contains("missing.safetensors") && e.contains("cannot be opened"),
        "{e}"
    );
    let junk = dir.path().join("junk.bin");
    std::fs::write(&junk, b"hello, not weights").unwrap();
    assert!(try_load(&junk).contains("is not a weights file"));
    let bytes = std::fs::read(&good).unwrap();
    let cut = dir.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(try_load(&cut).contains("truncated"));
    let mut named: Vec<(String, Tensor)> = Tensor::read_safetensors(&good).unwrap();
    type Named = Vec<(String, Tensor)>;
    let edit = |f: &dyn Fn(&mut Named), name: &str| {
        let mut n: Vec<(String, Tensor)> = named
            .iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        f(&mut n);
        let p = dir.path().join(name);
        ccma::io::safetensors::save(&p, &n, &Default::default()).unwrap();
        try_load(&p)
    };
    let e = edit(
        &|n| n.retain(|(k, _)| k != "mlm_head.fc.bias"),
        "nokey.safetensors",
    );
    assert!(
        e.contains("missing key `mlm_head.fc.bias`") && e.contains("[1000]"),
        "{e}"
    );
    let e = edit(
        &|n| {
            n.push((
                "extra.weight".into(),
                Tensor::zeros([2], (Kind::Float, Device::Cpu)),
            ))
        },
        "extra.safetensors",
    );
    assert!(e.contains("unexpected key `extra.weight`"), "{e}");
    let e = edit(
        &|n| {
            let i = n
                .iter()
                .position(|(k, _)| k == "classifier.weight")
                .unwrap();
            n[i].1 = Tensor::zeros([5, 32], (Kind::Float, Device::Cpu));
        },
        "shape.safetensors",
    );
    assert!(
        e.contains(
            "shape mismatch for key `classifier.weight`: file has [5, 32], model expects [7, 32]"
        ),
        "{e}"
    );
    named.clear();
}

#[test]
fn dca_gradients_match_finite_differences() {
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let block = ccma::model::dca::DcaBlock::new(vs.root() / "dca_image" / 0, 16, 4, 0.8);
    let mut vs = vs;
    vs.double();
    let opts = (Kind::Double, Device::Cpu);
    let x = Tensor::randn([2, 5, 16], opts).set_requires_grad(true);
    let y = Tensor::randn([2, 7, 16], opts);
    let w = Tensor::randn([2, 5, 16], opts);
    let mask = Tensor::zeros([2, 1, 1, 7], opts).index_fill(
        3,
        &Tensor::from_slice(&[6i64]),
        f64::NEG_INFINITY,
    );
    let f = |x: &Tensor| (block.forward(x, &y, Some(&mask)) * &w).sum(Kind::Double);
    f(&x).backward();
    let analytic = x.grad();
    let lam = vs.variables()["dca_image.0.lambda_q1"].shallow_clone();
    let lam_grad = lam.grad();
    let h = 1e-6;
    for idx in [[0i64, 0, 0], [1, 3, 7], [0, 4, 15]] {
        let xd = x.detach();
        let bump = |s: f64| {
            let xp = xd.copy();
            let _ = xp
                .get(idx[0])
                .get(idx[1])
                .get(idx[2])
                .fill_(xd.double_value(&idx) + s);
            tch::no_grad(|| f(&xp).double_value(&[]))
        };
        let numeric = (bump(h) - bump(-h)) / (2.0 * h);
        let a = analytic.double_value(&idx);
        assert!(
            (numeric - a).abs() < 1e-6 * a.abs().max(1.0),
            "dX{idx:?}: {a} vs {numeric}"
        );
    }
    let mut lam_v = lam.shallow_clone();
    let orig = lam.double_value(&[2]);
    let at = |v: f64, lam_v: &mut Tensor| {
        tch::no_grad(|| {
            let _ = lam_v.get(2).fill_(v);
        });
        tch::no_grad(|| f(&x.detach()).double_value(&[]))
    };
    let numeric = (at(orig + h, &mut lam_v) - at(orig - h, &mut lam_v)) / (2.0 * h);
    at(orig, &mut lam_v);
    assert!(
        (numeric - lam_grad.double_value(&[2])).abs() < 1e-6,
        "dλ: {} vs {numeric}",
        lam_grad.double_value(&[2])
    );
}

#[test]
fn embed_writes_features_in_input_order() {
    let dir = generate();
    let archive = dir.path().join("clip.pt");
    let imgs: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let p = dir.path().join(format!("img{i}.png"));
            image::RgbImage::from_fn(40, 100, |x, y| {
                image::Rgb([(x * 6) as u8, (y * 2) as u8, 60 * i as u8])
            })
            .save(&p)
            .unwrap();
            p
        })
        .collect();
    let caps = dir.path().join("caps.txt");
    std::fs::write(&caps, "a man in a red coat\na woman with a black bag\n").unwrap();
    let out_path = dir.path().join("emb.safetensors");
    let run = |images: &[&std::path::PathBuf], out: &std::path::Path| {
        let mut args = vec![
            "embed",
            "--pretrained",
            archive.to_str().unwrap(),
            "--img-size",
            "64x32",
            "--out",
            out.to_str().unwrap(),
            "--images",
        ];
        args.extend(images.iter().map(|p| p.to_str().unwrap()));
        let o = ccma(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        load(out)
    };
    let a = run(&[&imgs[0], &imgs[1], &imgs[2]], &out_path);
    assert_eq!(a["image_features"].size(), [3, 32]);
    // These tiny weights have a 1,000-token vocabulary: captions are refused with a clear error.
    let o = ccma(&[
        "embed",
        "--pretrained",
        archive.to_str().unwrap(),
        "--captions",
        caps.to_str().unwrap(),
        "--out",
        dir.path().join("captions.safetensors").to_str().unwrap(),
    ]);
    assert_one_line_error(&o, "vocabulary has 1000 tokens");
    let b = run(&[&imgs[2], &imgs[0]], &dir.path().join("emb2.safetensors"));
    close(
        "order",
        &b["image_features"].get(0),
        &a["image_features"].get(2),
    );
    close(
        "order",
        &b["image_features"].get(1),
        &a["image_features"].get(0),
    );
    assert_one_line_error(
        &ccma(&[
            "embed",
            "--pretrained",
            archive.to_str().unwrap(),
            "--out",
            out_path.to_str().unwrap(),
        ]),
        "nothing to embed",
    );
}

/// `torch.save` files read by the restricted reader: every tensor as torch wrote it, and a pickle
/// that would call `os.system` refused by name without running anything.
#[test]
fn torch_save_files_are_read_without_running_code() {
    use ccma::io::pickle::{load_torch_zip, Value};
    let dir = tempfile::tempdir().unwrap();
    reference("pickle_ref.py", &[dir.path().to_str().unwrap()]);
    let v = load_torch_zip(&dir.path().join("state.pth")).unwrap();
    let want = load(&dir.path().join("expected.safetensors"));
    let Some(Value::Dict(model)) = v.get("model") else {
        panic!("no model dict: {v:?}")
    };
    assert_eq!(model.len(), want.len());
    for (k, t) in model {
        let (Value::Str(k), Value::Tensor(t)) = (k, t) else {
            panic!("{k:?}")
        };
        assert_eq!(t.kind(), want[k].kind(), "{k}");
        assert_eq!(t.size(), want[k].size(), "{k}");
        assert!(t.equal(&want[k]), "{k}");
    }
    assert!(matches!(v.get("iteration"), Some(Value::Int(12345678901))));
    let e = format!(
        "{:#}",
        load_torch_zip(&dir.path().join("evil.pth")).unwrap_err()
    );
    assert!(
        e.contains("refuses the global `posix.system`")
            || e.contains("refuses the global `os.system`"),
        "{e}"
    );
    let evil = dir.path().join("evil.pth");
    let out = ccma(&[
        "export",
        "--format",
        "irra",
        evil.to_str().unwrap(),
        dir.path().join("x.safetensors").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "refuses the global");
    assert!(!dir.path().join("pwned").exists(), "nothing ran");
    assert!(
        !dir.path().join("x.safetensors").exists(),
        "nothing written"
    );
}

/// Hugging Face CLIP (`save_pretrained` folder, or its model.safetensors): the same features as
/// `transformers`' get_image_features / get_text_features at the model's own size, and with the
/// positional grid resized bilinearly at another size (relative 1e-4); heads from config.json.
#[test]
fn hugging_face_clip_gives_transformers_features() {
    use ccma::factory::{inference_model, WeightsSource};
    let dir = tempfile::tempdir().unwrap();
    reference("hf_ref.py", &[dir.path().to_str().unwrap()]);
    let io = load(&dir.path().join("io.safetensors"));
    let rel_close = |name: &str, ours: &Tensor, want: &Tensor| {
        let d = max_abs_diff(ours, want) / want.abs().max().double_value(&[]);
        assert!(d < 1e-4, "{name}: max relative diff {d}");
    };
    let hf = dir.path().join("hf");
    for source in [hf.clone(), hf.join("model.safetensors")] {
        let m = inference_model(
            &WeightsSource::Pretrained(source.clone()),
            Some((64, 64)),
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            (
                m.model.config.clip.vision_heads,
                m.model.config.clip.text_heads
            ),
            (4, 2)
        );
        let _guard = tch::no_grad_guard();
        rel_close("f_i", &m.model.image_features(&io["images"]), &io["f_i"]);
        rel_close("f_t", &m.model.text_features(&io["ids"]), &io["f_t"]);
        let narrow = inference_model(
            &WeightsSource::Pretrained(source),
            Some((64, 32)),
            Device::Cpu,
        )
        .unwrap();
        rel_close(
            "f_i 64x32",
            &narrow.model.image_features(&io["narrow"]),
            &io["f_i_64x32"],
        );
    }
    // A config the model here does not implement is refused, naming the key.
    let cfg = hf.join("config.json");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("quick_gelu", "gelu");
    std::fs::write(&cfg, text).unwrap();
    let e = inference_model(&WeightsSource::Pretrained(hf), None, Device::Cpu)
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("hidden_act` is \"gelu\""),
        "{e:#}"
    );
}

/// A Hugging Face `config.json` whose `hidden_size` would overflow the MLP's width (4 x) is
/// refused on one line naming the key, exit code 2, instead of printing a wrapped product.
#[test]
fn a_hugging_face_width_that_overflows_is_refused_naming_the_key() {
    let root = cuhk_fixture();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    save(
        &hf.join("model.safetensors"),
        &[(
            "vision_model.embeddings.class_embedding",
            &Tensor::zeros([16], (Kind::Float, Device::Cpu)),
        )],
    );
    let tower = |width: i64| serde_json::json!({"hidden_size": width, "intermediate_size": 0, "num_attention_heads": 1});
    let config = serde_json::json!({"vision_config": tower(1 << 62), "text_config": tower(16)});
    std::fs::write(hf.join("config.json"), config.to_string()).unwrap();
    let out = train_command(
        &cfg,
        &dir.path().join("run"),
        &["--pretrained", hf.to_str().unwrap()],
    )
    .output()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_one_line_error(
        &out,
        "`vision_config.hidden_size` is 4611686018427387904; expected a positive width",
    );
}
