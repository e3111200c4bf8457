//! Noisy correspondences: `.npy` files written by NumPy read back exactly, each bad file refused
//! in one line, and the noise index drawn bit for bit as RDE draws it with NumPy
//! (tests/reference/noise_ref.py).
mod common;
use ccma::data::noise::NoiseIndex;
use ccma::io::npy::NpyVector;
use common::*;
use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn npy_files_written_by_numpy_read_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let out = reference("noise_ref.py", &["npy", s(dir.path())]);
    let values: BTreeMap<String, Vec<i64>> = serde_json::from_str(&out).unwrap();
    assert_eq!(values.len(), 7);
    for (name, expected) in values {
        let file = NpyVector::open(&dir.path().join(format!("{name}.npy")), "noise file").unwrap();
        assert_eq!(file.len(), expected.len(), "{name}");
        assert_eq!(file.read().unwrap(), expected, "{name}");
    }
}

#[test]
fn bad_npy_files_are_refused_in_one_line_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    reference("noise_ref.py", &["npy", s(dir.path())]);
    for (name, needle) in [
        ("float", "dtype '<f8' (expected int64 or int32"),
        ("uint8", "dtype '|u1'"),
        ("rank2", "rank 2 (shape [2, 3]; expected a 1-D array)"),
        ("rank0", "rank 0"),
        ("fortran", "Fortran order"),
        (
            "truncated",
            "truncated: 173 bytes, expected 176 for 6 entries",
        ),
        ("trailing", "184 bytes, more than the 6 entries"),
        ("cut_header", "truncated in its header"),
        ("not_npy", "not a NumPy .npy file"),
        ("huge_header", "a header of 20"),
        ("huge_shape", "more than the 4611686018427387904 entries"),
    ] {
        let path = dir.path().join(format!("{name}.npy"));
        let e = match NpyVector::open(&path, "noise file") {
            Ok(_) => panic!("{name} was accepted"),
            Err(e) => e,
        };
        assert!(
            e.downcast_ref::<ccma::UsageError>().is_some(),
            "{name}: {e:#}"
        );
        let text = format!("{e:#}");
        assert!(!text.contains('\n'), "{name}: {text}");
        assert!(
            text.contains(&format!("noise file {}", path.display())),
            "{text}"
        );
        assert!(text.contains(needle), "{name}: {text}");
    }
    let fifo = dir.path().join("fifo.npy");
    mkfifo(&fifo);
    let e = NpyVector::open(&fifo, "noise file").err().unwrap();
    assert!(e.to_string().contains("is a FIFO"), "{e}");
}

#[test]
fn a_noise_file_must_fit_the_training_split() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("n.npy");
    ccma::io::npy::write_npy(&path, &[1, 0, 2]).unwrap();
    let idx = NoiseIndex::read(&path, 3).unwrap();
    assert_eq!(idx.sources(), [1, 0, 2]);
    assert_eq!(idx.clean_count(), 1);
    let e = NoiseIndex::read(&path, 4).unwrap_err().to_string();
    assert!(
        e.contains("holds 3 entries, expected 4 (the training split's pair count)"),
        "{e}"
    );
    ccma::io::npy::write_npy(&path, &[1, 3, 2]).unwrap();
    let e = NoiseIndex::read(&path, 3).unwrap_err().to_string();
    assert!(
        e.contains("entry 1 is 3, expected a pair index from 0 to 2"),
        "{e}"
    );
    ccma::io::npy::write_npy(&path, &[1, -1, 2]).unwrap();
    assert!(NoiseIndex::read(&path, 3).is_err());
}

/// NumPy's draw and ours agree entry for entry, for several sizes, rates and seeds.
#[test]
fn noise_indices_are_drawn_as_numpy_draws_them() {
    let dir = tempfile::tempdir().unwrap();
    for (n, rate, seed) in [
        (1usize, 0.5, 1u64),
        (10, 0.2, 1),
        (997, 0.5, 3),
        (5000, 0.8, 1),
        (68126, 0.2, 1),
    ] {
        let path = dir.path().join(format!("{n}_{rate}_{seed}.npy"));
        let clean: usize = reference(
            "noise_ref.py",
            &[
                "draw",
                &n.to_string(),
                &rate.to_string(),
                &seed.to_string(),
                s(&path),
            ],
        )
        .trim()
        .parse()
        .unwrap();
        let ours = NoiseIndex::draw(n, rate, seed).unwrap();
        assert_eq!(
            ours,
            NoiseIndex::read(&path, n).unwrap(),
            "{n} {rate} {seed}"
        );
        assert_eq!(ours.clean_count(), clean);
    }
}

/// The clean counts of RDE's nine shipped files (docs/METHOD.md section 7) are what the rule
/// gives with seed 1 for the three training splits' sizes.
#[test]
fn the_published_clean_counts_follow_from_seed_1() {
    for (n, counts) in [
        (68126, [54502, 34064, 13626]),
        (34674, [27741, 17337, 6937]),
        (37010, [29610, 18505, 7405]),
    ] {
        for (rate, clean) in [0.2, 0.5, 0.8].into_iter().zip(counts) {
            let idx = NoiseIndex::draw(n, rate, 1).unwrap();
            assert_eq!(idx.clean_count(), clean, "N {n}, rate {rate}");
        }
    }
}

/// A run with RDE's flags trains on the noisy pairs: the run folder keeps the index, which is
/// NumPy's draw with the run's seed over the training pairs, and the log states the counts.
#[test]
fn a_run_keeps_its_noise_index_and_states_the_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = synth_config(dir.path(), 1);
    let run = dir.path().join("run");
    let out = train_command(&cfg, &run, &["--noisy_rate", "0.5", "--txt_aug"])
        .output()
        .unwrap();
    succeeded(&out, "ccma train --noisy_rate 0.5 --txt_aug");
    let ours = NpyVector::open(&run.join("noise_index.npy"), "noise index").unwrap();
    let n = ours.len();
    let ours = ours.read().unwrap();
    let numpy = dir.path().join("numpy.npy");
    let clean: usize = reference(
        "noise_ref.py",
        &["draw", &n.to_string(), "0.5", "3", s(&numpy)],
    )
    .trim()
    .parse()
    .unwrap();
    assert_eq!(ours, NoiseIndex::read(&numpy, n).unwrap().sources());
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    let line = format!(
        "noisy correspondences: {clean} clean pairs, {} noisy pairs of {n}",
        n - clean
    );
    assert!(log.contains(&line), "{line}\n{log}");
    let config = std::fs::read_to_string(run.join("configs.yaml")).unwrap();
    assert!(config.contains("txt_aug: true"), "{config}");

    // The same index given as a file is used as it is; one of another length is refused.
    let again = dir.path().join("again");
    let index = s(&run.join("noise_index.npy")).to_string();
    train_command(&cfg, &again, &["--noisy_file", &index])
        .env("CCMA_INTERRUPT_AT_STEP", "1")
        .output()
        .unwrap();
    let log = std::fs::read_to_string(again.join("train_log.txt")).unwrap();
    assert!(log.contains(&line), "{line}\n{log}");
    let short = dir.path().join("short.npy");
    ccma::io::npy::write_npy(&short, &ours[1..]).unwrap();
    let out = train_command(&cfg, &dir.path().join("bad"), &["--noisy_file", s(&short)])
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        &format!(
            "holds {} entries, expected {n} (the training split's pair count)",
            n - 1
        ),
    );
    let out = train_command(&cfg, &dir.path().join("bad2"), &["--noisy_rate", "1"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "noisy_rate");
}

/// `--set KEY=VALUE` for each of `pairs`.
fn sets(pairs: &[&str]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|p| ["--set".to_string(), p.to_string()])
        .collect()
}

/// `ccma train` on the generated set at noise 0.5 with `extra` settings and the clean division
/// after one warm-up epoch, 2 epochs: no division in the warm-up epoch, then the epoch's
/// precision, recall and clean fraction in metrics.jsonl and the log, and each of `terms`
/// recorded finite.
fn divided_run(dir: &Path, name: &str, extra: &[&str], terms: &[&str]) {
    let cfg = synth_config(dir, 2);
    let run = dir.join(name);
    let mut pairs = vec!["noise_filter=ccd", "ccd_warmup=1", "noisy_rate=0.5"];
    pairs.extend_from_slice(extra);
    let out = train_command(&cfg, &run, &[])
        .args(sets(&pairs))
        .output()
        .unwrap();
    succeeded(&out, "ccma train with noise_filter: ccd");
    let records = metrics(&run);
    assert_eq!(records.len(), 2);
    assert!(
        records[0].get("ccd_clean_fraction").is_none(),
        "{}",
        records[0]
    );
    let r = &records[1];
    for key in ["ccd_precision", "ccd_recall", "ccd_clean_fraction"] {
        let v = r[key].as_f64().unwrap_or_else(|| panic!("{key} in {r}"));
        assert!((0.0..=1.0).contains(&v), "{key} {v}");
    }
    let loss = r["loss"].as_object().unwrap();
    assert_eq!(loss.len(), terms.len(), "{r}");
    for term in terms {
        let v = loss[*term]
            .as_f64()
            .unwrap_or_else(|| panic!("{term} in {r}"));
        assert!(v.is_finite(), "{term} {v}");
    }
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    assert!(log.contains("epoch 2 clean division"), "{log}");
}

/// CCMA's terms and TAL with the clean division (METHOD.md section 7, "Beyond both") train
/// through the binary, every term recorded.
#[test]
fn ccmas_terms_train_with_the_clean_division() {
    let dir = tempfile::tempdir().unwrap();
    let terms = ["itc", "sdm", "cmpm", "id", "mlm", "imal", "tal"];
    divided_run(
        dir.path(),
        "ccma",
        &["tse=true", "loss_names=imal+tal"],
        &terms,
    );
}

/// RDE's recipe with the clean division on the generated set at noise 0.5; the division's
/// settings that cannot act are refused by name.
#[test]
fn the_clean_division_runs_before_every_epoch_after_the_warm_up() {
    let dir = tempfile::tempdir().unwrap();
    let rde = ["tse=true", "loss_names=tal", "MLM=false", "txt_aug=true"];
    divided_run(dir.path(), "run", &rde, &["tal"]);
    let cfg = synth_config(dir.path(), 2);

    for (n, (extra, needle)) in [
        (
            &["loss_names=tal", "MLM=false", "noise_filter=ccd"][..],
            "noise_filter",
        ),
        (
            &["tse=true", "noise_filter=ccd"][..],
            "which only the tal term trains",
        ),
        (&["ccd_warmup=2"][..], "ccd_warmup"),
        (&["tse_batchnorm=batch"][..], "tse_batchnorm"),
    ]
    .into_iter()
    .enumerate()
    {
        let bad = dir.path().join(format!("bad{n}"));
        let out = train_command(&cfg, &bad, &[])
            .args(sets(extra))
            .output()
            .unwrap();
        assert_one_line_error(&out, needle);
    }
}
