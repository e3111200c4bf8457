//! A model folder as IRRA's, CCMA's or RDE's train.py leaves it (configs.yaml written by their
//! `save_train_configs`, best.pth beside it; tests/reference/authors_folder.py), tested as their
//! test.py tests it: `ccma test --config_file FOLDER/configs.yaml`.
mod common;
use common::*;
use std::path::Path;
use tch::Tensor;

/// Ten test images of five people (two each, one caption each) and two training images.
fn dataset(root: &Path) -> Vec<(i64, String, String)> {
    let test: Vec<(i64, String, String)> = (0..10)
        .map(|i| {
            (
                7 + i / 2,
                format!("t/{i}.png"),
                format!("person {} wearing colour {i}", i / 2),
            )
        })
        .collect();
    let mut entries: Vec<serde_json::Value> = vec![
        serde_json::json!({"split": "train", "id": 1, "file_path": "a/1.jpg", "captions": ["a man"]}),
        serde_json::json!({"split": "train", "id": 2, "file_path": "a/2.jpg", "captions": ["a woman"]}),
    ];
    let dir = root.join("CUHK-PEDES");
    for p in ["a/1.jpg", "a/2.jpg"] {
        image(&dir.join("imgs").join(p));
    }
    for (i, (pid, path, caption)) in test.iter().enumerate() {
        let file = dir.join("imgs").join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        // Images that differ, so that no two have the same features.
        image::RgbImage::from_fn(24, 60, |x, y| {
            let v = (x * 37 + y * 11 + i as u32 * 53) % 256;
            image::Rgb([v as u8, (v * 3 % 256) as u8, (255 - v) as u8])
        })
        .save(&file)
        .unwrap();
        entries.push(serde_json::json!({"split": "test", "id": pid, "file_path": path, "captions": [caption]}));
    }
    std::fs::write(
        dir.join("reid_raw.json"),
        serde_json::to_string(&entries).unwrap(),
    )
    .unwrap();
    test
}

/// A 64-wide model (one attention head per encoder, as IRRA's code gives that width) at IRRA's
/// defaults, 384x128 and 77 tokens, saved as a ccma checkpoint at `path`.
fn model(dir: &Path, root: &Path, path: &Path) {
    let cfg = dir.join("model.yaml");
    std::fs::write(
        &cfg,
        format!(
            "dataset_name: CUHK-PEDES\nroot_dir: {}\npretrain_choice: ''\nimg_size: [384, 128]\n\
             embed_dim: 32\nvision_width: 64\nvision_layers: 1\nvision_heads: 1\n\
             transformer_width: 64\ntransformer_layers: 1\ntransformer_heads: 1\ntext_length: 77\n\
             cmt_depth: 1\ndca_heads: 2\n",
            root.display()
        ),
    )
    .unwrap();
    tiny_checkpoint(&cfg, path, |t| t);
}

/// The folder's metrics as IRRA's evaluation computes them: the model's features of the test
/// split (through `ccma embed`, the weights read alone at IRRA's 384x128) ranked by
/// tests/reference/eval_ref.py.
fn irra_metrics(
    dir: &Path,
    folder: &Path,
    root: &Path,
    test: &[(i64, String, String)],
) -> serde_json::Value {
    let captions = dir.join("captions.txt");
    let lines: Vec<&str> = test.iter().map(|(_, _, c)| c.as_str()).collect();
    std::fs::write(&captions, lines.join("\n")).unwrap();
    let images: Vec<String> = test
        .iter()
        .map(|(_, p, _)| s(&root.join("CUHK-PEDES/imgs").join(p)).to_string())
        .collect();
    let feats = dir.join("features.safetensors");
    let pth = folder.join("best.pth");
    let mut args = vec![
        "embed",
        "--pretrained",
        s(&pth),
        "--img-size",
        "384x128",
        "--captions",
        s(&captions),
        "--out",
        s(&feats),
        "--images",
    ];
    args.extend(images.iter().map(String::as_str));
    ccma_ok(&args);
    let f = load(&feats);
    let pids = Tensor::from_slice(&test.iter().map(|(p, _, _)| *p).collect::<Vec<i64>>());
    let (q, g) = (dir.join("q.safetensors"), dir.join("g.safetensors"));
    save(&q, &[("features", &f["text_features"]), ("pids", &pids)]);
    save(&g, &[("features", &f["image_features"]), ("pids", &pids)]);
    serde_json::from_str(&reference("eval_ref.py", &[s(&q), s(&g)])).unwrap()
}

#[test]
fn irras_model_folder_is_tested_as_irras_test_py_tests_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let test = dataset(&root);
    let ck = dir.path().join("model.safetensors");
    model(dir.path(), &root, &ck);
    let folder = dir.path().join("shipped");
    reference("authors_folder.py", &[s(&folder), s(&root), s(&ck)]);
    let yaml = std::fs::read_to_string(folder.join("configs.yaml")).unwrap();
    for written in [
        "img_size: !!python/tuple",
        "local_rank: 0",
        "training: true",
        "output_dir: logs/CUHK-PEDES/",
    ] {
        assert!(yaml.contains(written), "{written}: {yaml}");
    }
    let out = ccma_ok(&[
        "test",
        "--config_file",
        s(&folder.join("configs.yaml")),
        "--json",
    ]);
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("set aside") && err.contains("`local_rank`"),
        "{err}"
    );
    let theirs = irra_metrics(dir.path(), &folder, &root, &test);
    for k in ["R1", "R5", "R10", "mAP", "mINP"] {
        let (a, b) = (
            ours["t2i"][k].as_f64().unwrap(),
            theirs["t2i"][k].as_f64().unwrap(),
        );
        assert!((a - b).abs() < 1e-6, "{k}: ccma {a}, reference {b}");
    }
    // The record names the folder's best.pth and IRRA's input size and caption length.
    let record = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.starts_with("test_results.best.")
                && n.ends_with(".json")
                && !n.ends_with(".queries.jsonl")
        })
        .expect("a test record beside best.pth");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    assert!(record["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("shipped/best.pth"));
    assert_eq!(
        record["settings"]["img_size"],
        serde_json::json!([384, 128])
    );
    assert_eq!(record["settings"]["text_length"], 77);
}

#[test]
fn python_objects_in_an_rde_folder_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    dataset(&root);
    let ck = dir.path().join("model.safetensors");
    model(dir.path(), &root, &ck);
    let folder = dir.path().join("rde");
    reference(
        "authors_folder.py",
        &[s(&folder), s(&root), s(&ck), "--rde"],
    );
    let config = folder.join("configs.yaml");
    let yaml = std::fs::read_to_string(&config).unwrap();
    // A Python object is never made: the value it tags must still have its key's type.
    let object = "lr: !!python/object/apply:os.system ['touch made']";
    assert!(yaml.contains("lr: 1.0e-05"), "{yaml}");
    std::fs::write(&config, yaml.replace("lr: 1.0e-05", object)).unwrap();
    let before = snapshot(&folder);
    let out = ccma(&["test", "--config_file", s(&config)]);
    assert_one_line_error(&out, "wrong type for `lr`");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(snapshot(&folder), before, "nothing written");
}
