//! Retrieval with two embeddings (METHOD.md section 7): a tiny model with the TSE layers trained
//! with `tal` for one epoch on generated data; `ccma test` reports the configured similarity and
//! the BGE, TSE and BGE+TSE rows, `ccma embed` writes the TSE features, `ccma search` ranks a
//! feature file by the configured similarity, `ccma rank` of the embedded test split gives each
//! of test's rows, and a similarity that needs TSE is refused, by name, for a model or a feature
//! file without it.
mod common;
use common::*;
use std::path::Path;

/// A config of the 16-wide model on 8 / 4 / 4 generated identities, one epoch, with `extra`.
fn config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let cfg = format!(
        "dataset_name: TOY-PEDES\nroot_dir: {root}\nsynth_ids: [8, 4, 4]\n{MODEL_16}text_length: 16\n\
         batch_size: 8\ntest_batch_size: 64\nnum_epoch: 1\nnum_workers: 1\nseed: 3\nsynth_seed: 3\n{extra}",
        root = dir.join("data").display()
    );
    let path = dir.join("cfg.yaml");
    std::fs::write(&path, cfg).unwrap();
    path
}

fn train(dir: &Path, extra: &str) -> std::path::PathBuf {
    let run = dir.join("run");
    let out = train_command(&config(dir, extra), &run, &[])
        .output()
        .unwrap();
    succeeded(&out, "ccma train");
    run
}

#[test]
fn a_model_with_tse_is_tested_embedded_and_searched_by_its_similarity() {
    let dir = tempfile::tempdir().unwrap();
    let run = train(dir.path(), "tse: true\nloss_names: TAL\nMLM: false\n");
    let cfg = run.join("configs.yaml");
    let test = |extra: &[&str]| {
        let mut args = vec!["test", "--config", s(&cfg), "--json"];
        args.extend_from_slice(extra);
        ccma_json(&args)
    };
    // The default for a model with TSE is BGE+TSE, and every row is reported.
    let v = test(&[]);
    assert_eq!(v["similarity"], "bge+tse", "{v}");
    let rows = v["t2i_by_similarity"].as_object().unwrap();
    assert_eq!(
        rows.keys().collect::<Vec<_>>(),
        ["bge", "bge+tse", "tse"],
        "{v}"
    );
    assert_eq!(v["t2i"], rows["bge+tse"], "{v}");
    // The setting acts: the headline is the configured row.
    for s in ["bge", "tse"] {
        let set = format!("similarity={s}");
        let w = test(&["--set", &set]);
        assert_eq!(w["similarity"], s);
        assert_eq!(w["t2i"], rows[s], "{s}: {w}");
    }
    // The table names the three rows as RDE's evaluator prints them.
    let out = ccma_ok(&["test", "--config", s(&cfg)]);
    let text = String::from_utf8_lossy(&out.stdout);
    for row in ["t2i BGE ", "t2i TSE ", "t2i BGE+TSE "] {
        assert!(text.contains(row), "{row}: {text}");
    }

    // rank of the test split's features gives test's row of each similarity: BGE+TSE by default,
    // as both files have TSE features, and BGE where one lacks them; TSE is refused there.
    let split = embed_split(
        dir.path(),
        &run.join("best.safetensors"),
        &dir.path().join("data/TOY-PEDES-8-4-4-s3"),
        "test",
    );
    let rank = |gallery: &Path, extra: &[&str]| {
        let mut args = vec![
            "rank",
            "--queries",
            s(&split.features),
            "--gallery",
            s(gallery),
        ];
        args.extend(["--query-pids", s(&split.query_pids)]);
        args.extend(["--gallery-pids", s(&split.gallery_pids), "--json"]);
        args.extend_from_slice(extra);
        ccma(&args)
    };
    let same_metrics = |r: &serde_json::Value, row: &serde_json::Value| {
        for (k, v) in row.as_object().unwrap() {
            let got = r["t2i"][k].as_f64().unwrap();
            assert!(
                (got - v.as_f64().unwrap()).abs() < 1e-9,
                "{k}: {r} vs {row}"
            );
        }
    };
    let json = |out: std::process::Output| -> serde_json::Value {
        succeeded(&out, "rank");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let r = json(rank(&split.features, &[]));
    assert_eq!(r["similarity"], "bge+tse", "{r}");
    same_metrics(&r, &rows["bge+tse"]);
    for sim in ["bge", "tse", "bge+tse"] {
        let r = json(rank(&split.features, &["--similarity", sim]));
        assert_eq!(r["similarity"], sim, "{r}");
        same_metrics(&r, &rows[sim]);
    }
    let without = dir.path().join("without_tse.safetensors");
    let f = load(&split.features);
    save(&without, &[("image_features", &f["image_features"])]);
    let r = json(rank(&without, &[]));
    assert_eq!(r["similarity"], "bge", "{r}");
    same_metrics(&r, &rows["bge"]);
    assert_one_line_error(
        &rank(&without, &["--similarity", "tse"]),
        "missing tensor `image_tse_features`, which similarity tse compares",
    );

    // embed writes both embeddings of each side.
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    let found = std::fs::read_dir(dir.path().join("data/TOY-PEDES-8-4-4-s3/imgs/synth"))
        .unwrap()
        .take(3);
    for (i, f) in found.enumerate() {
        std::fs::copy(f.unwrap().path(), images.join(format!("{i}.jpg"))).unwrap();
    }
    let captions = dir.path().join("captions.txt");
    std::fs::write(&captions, "a man in a red coat\na woman with a bag\n").unwrap();
    let feats = dir.path().join("f.safetensors");
    let best = run.join("best.safetensors");
    ccma_ok(&[
        "embed",
        "--checkpoint",
        s(&best),
        "--image-dir",
        s(&images),
        "--captions",
        s(&captions),
        "--out",
        s(&feats),
    ]);
    let f = load(&feats);
    assert_eq!(f["image_features"].size(), [3, 16]);
    assert_eq!(f["image_tse_features"].size(), [3, 32]);
    assert_eq!(f["text_tse_features"].size(), [2, 32]);

    // search ranks the feature file's images by BGE+TSE as it ranks the folder's.
    let search = |gallery: &Path| {
        let v = ccma_json(&[
            "search",
            "--checkpoint",
            s(&best),
            "--gallery",
            s(gallery),
            "--json",
            "a man in a red coat",
        ]);
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["index"].as_u64().unwrap(), r["score"].as_f64().unwrap()))
            .collect::<Vec<_>>()
    };
    let (from_file, from_dir) = (search(&feats), search(&images));
    assert_eq!(from_file.len(), 3);
    for ((i, a), (j, b)) in from_file.iter().zip(&from_dir) {
        assert_eq!(i, j);
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn a_similarity_that_needs_tse_is_refused_for_a_model_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "loss_names: sdm\nMLM: false\nsimilarity: tse\n");
    let out = ccma(&[
        "train",
        "--config",
        s(&cfg),
        "--run-dir",
        s(&dir.path().join("r")),
    ]);
    assert_one_line_error(&out, "`similarity`");
}
