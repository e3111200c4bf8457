//! Reporting results honestly, through the binary: choosing the best epoch on the validation split
//! (`val_dataset: val`), the per-query file of `ccma test` and its means, `ccma compare` (a paired
//! bootstrap over queries) and `ccma summarize` (mean ± std over seeds), each against a Python
//! reference (`tests/reference/reporting_ref.py`) on the same files.
mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A small from-scratch model (the one `tests/train_e2e.rs` trains) on 60 / 20 / 20 generated
/// identities in `<root>/data`, choosing its best epoch on the validation split, at learning rate
/// `lr`, one generated set (`synth_seed` 3) whatever the `seed`; `extra` YAML lines after the rest.
fn write_config(root: &Path, name: &str, seed: u64, lr: &str, extra: &str) -> PathBuf {
    let cfg = format!(
        "dataset_name: TOY-PEDES\nroot_dir: {data}\nsynth_ids: [60, 20, 20]\n{MODEL_32}\
         batch_size: 32\ntest_batch_size: 128\nlr: {lr}\n{SCRATCH_RECIPE}\
         val_dataset: val\nname: {name}\nseed: {seed}\nsynth_seed: 3\n{extra}",
        data = root.join("data").display()
    );
    let path = root.join(format!("{name}.yaml"));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// The trained runs the tests share: `a`, `c`, `d` differ only in `seed` (3, 4, 5; 4 epochs each),
/// `b` is `a` with another learning rate and 2 epochs. `ccma test` has run on `a`, `b` and `c`,
/// and on a copy of `a`'s best checkpoint in `elsewhere` with another generated set
/// (`synth_seed` 4): other test queries.
struct Runs {
    a: PathBuf,
    b: PathBuf,
    c: PathBuf,
    d: PathBuf,
    elsewhere: PathBuf,
}

fn runs() -> &'static Runs {
    static RUNS: OnceLock<Runs> = OnceLock::new();
    RUNS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reporting");
        if root.exists() {
            std::fs::remove_dir_all(&root).unwrap();
        }
        std::fs::create_dir_all(&root).unwrap();
        let train = |name: &str, seed: u64, lr: &str, extra: &str| {
            let cfg = write_config(&root, name, seed, lr, extra);
            let run = root.join(name);
            let out = train_command(&cfg, &run, &[]).output().unwrap();
            assert!(
                out.status.success(),
                "{name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            run
        };
        let runs = Runs {
            a: train("a", 3, "2.0e-3", "num_epoch: 4\n"),
            b: train("b", 3, "5.0e-4", "num_epoch: 2\n"),
            c: train("c", 4, "2.0e-3", "num_epoch: 4\n"),
            d: train("d", 5, "2.0e-3", "num_epoch: 4\n"),
            elsewhere: root.join("elsewhere"),
        };
        for run in [&runs.a, &runs.b, &runs.c] {
            ccma_ok(&[
                "test",
                "--config",
                run.join("configs.yaml").to_str().unwrap(),
            ]);
        }
        std::fs::create_dir(&runs.elsewhere).unwrap();
        let copy = runs.elsewhere.join("best.safetensors");
        std::fs::copy(runs.a.join("best.safetensors"), &copy).unwrap();
        ccma_ok(&[
            "test",
            "--config",
            runs.a.join("configs.yaml").to_str().unwrap(),
            "--checkpoint",
            copy.to_str().unwrap(),
            "--set",
            "synth_seed=4",
        ]);
        runs
    })
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The one file `ccma test` of `run`'s best checkpoint on `split` wrote ending in `ending`
/// (`.json`: the results, `.queries.jsonl`: the per-query records).
fn results_file(run: &Path, split: &str, ending: &str) -> PathBuf {
    let prefix = format!("{split}_results.best.");
    let found: Vec<PathBuf> = std::fs::read_dir(run)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(ending)
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{split} {ending} in {}: {found:?}",
        run.display()
    );
    found.into_iter().next().unwrap()
}

const METRICS: [&str; 5] = ["R1", "R5", "R10", "mAP", "mINP"];

/// The first record with the highest R@1 under `key` (`t2i` or `val_t2i`).
fn first_best<'a>(records: &'a [Value], key: &str) -> &'a Value {
    let mut best = &records[0];
    for r in records {
        if r[key]["R1"].as_f64().unwrap() > best[key]["R1"].as_f64().unwrap() {
            best = r;
        }
    }
    best
}

#[test]
fn choosing_on_val_keeps_the_best_val_epoch_and_reports_its_test_metrics() {
    let run = &runs().a;
    let records = metrics(run);
    assert_eq!(records.len(), 4);
    for r in &records {
        assert!(
            r["t2i"]["R1"].is_f64() && r["val_t2i"]["R1"].is_f64(),
            "both splits every epoch: {r}"
        );
    }
    let best_val = first_best(&records, "val_t2i");
    let best_test = first_best(&records, "t2i");
    let results = json_file(&run.join("results.json"));
    assert_eq!(results["chosen_on"], "val");
    assert_eq!(results["best_epoch"], best_val["epoch"], "{results}");
    assert_eq!(
        results["t2i"], best_val["t2i"],
        "the test metrics at the chosen epoch"
    );
    assert_eq!(results["val_t2i"], best_val["val_t2i"]);
    let t = &results["best_test_epoch"];
    assert_eq!(
        (&t["epoch"], &t["chosen_on"]),
        (&best_test["epoch"], &Value::from("test"))
    );
    assert_eq!(t["t2i"], best_test["t2i"]);
    // best.safetensors is the chosen epoch's model: ccma test gives its test and val metrics.
    let cfg = run.join("configs.yaml");
    for (split, key) in [("test", "t2i"), ("val", "val_t2i")] {
        let out = ccma_json(&["test", "--config", s(&cfg), "--split", split, "--json"]);
        for k in METRICS {
            let (ours, trained) = (
                out["t2i"][k].as_f64().unwrap(),
                best_val[key][k].as_f64().unwrap(),
            );
            assert!(
                (ours - trained).abs() < 1e-9,
                "{split} {k}: test {ours}, training {trained}"
            );
        }
    }
    let log = std::fs::read_to_string(run.join("train_log.txt")).unwrap();
    assert!(log.contains("on val at epoch"), "{log}");
}

#[test]
fn the_per_query_file_gives_the_reported_metrics_exactly() {
    let run = &runs().a;
    let cfg = run.join("configs.yaml");
    for split in ["test", "val"] {
        let out = ccma_json(&["test", "--config", s(&cfg), "--split", split, "--json"]);
        let queries = results_file(run, split, ".queries.jsonl");
        assert_eq!(
            json_file(&results_file(run, split, ".json"))["t2i"],
            out["t2i"]
        );
        let text = std::fs::read_to_string(&queries).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["AP", "INP", "caption", "pid", "query", "rank"],
            "{first}"
        );
        let n = text.lines().count();
        for (i, line) in text.lines().enumerate() {
            let r: Value = serde_json::from_str(line).unwrap();
            assert_eq!(r["query"], i, "every query kept, in order");
        }
        let reference: Value =
            serde_json::from_str(&reference("reporting_ref.py", &["means", s(&queries)])).unwrap();
        for k in METRICS {
            assert_eq!(
                out["t2i"][k].as_f64().unwrap(),
                reference[k].as_f64().unwrap(),
                "{split} {k}: reported vs the mean of {n} records"
            );
        }
    }
}

#[test]
fn compare_of_a_run_with_itself_is_zero() {
    let run = &runs().a;
    let out = ccma_json(&["compare", s(run), s(run), "--json"]);
    for m in out["metrics"].as_array().unwrap() {
        assert_eq!(
            (m["diff"].as_f64(), m["low"].as_f64(), m["high"].as_f64()),
            (Some(0.0), Some(0.0), Some(0.0)),
            "{m}"
        );
    }
    assert!(
        out["verdict"]
            .as_str()
            .unwrap()
            .contains("every 95% interval includes 0"),
        "{out}"
    );
    let table = String::from_utf8(ccma_ok(&["compare", s(run), s(run)]).stdout).unwrap();
    assert!(
        table.contains("[+0.00, +0.00]") && table.lines().last().unwrap().starts_with("verdict:"),
        "{table}"
    );
}

#[test]
fn compare_agrees_with_a_numpy_paired_bootstrap() {
    let Runs { a, b, .. } = runs();
    let (qa, qb) = (
        results_file(a, "test", ".queries.jsonl"),
        results_file(b, "test", ".queries.jsonl"),
    );
    // A run folder, a results file and a per-query file name the same evaluation.
    let ours = ccma_json(&[
        "compare",
        s(a),
        s(&results_file(b, "test", ".json")),
        "--resamples",
        "2000",
        "--seed",
        "7",
        "--json",
    ]);
    assert_eq!(
        ours["metrics"],
        ccma_json(&[
            "compare",
            s(&qa),
            s(b),
            "--resamples",
            "2000",
            "--seed",
            "7",
            "--json"
        ])["metrics"]
    );
    let theirs: Value = serde_json::from_str(&reference(
        "reporting_ref.py",
        &["bootstrap", s(&qa), s(&qb), "2000", "7"],
    ))
    .unwrap();
    let mut excluded = Vec::new();
    let mut any_nonzero = false;
    for m in ours["metrics"].as_array().unwrap() {
        let k = m["metric"].as_str().unwrap();
        for field in ["A", "B", "diff", "low", "high"] {
            let (x, y) = (
                m[field].as_f64().unwrap(),
                theirs[k][field].as_f64().unwrap(),
            );
            // The same resamples: the intervals agree up to the order of float sums.
            assert!((x - y).abs() < 1e-9, "{k} {field}: ours {x}, numpy {y}");
        }
        let (low, high) = (m["low"].as_f64().unwrap(), m["high"].as_f64().unwrap());
        any_nonzero |= high - low > 0.0;
        if low > 0.0 || high < 0.0 {
            excluded.push(k);
        }
    }
    assert!(
        any_nonzero,
        "two different models give intervals of some width: {ours}"
    );
    let verdict = ours["verdict"].as_str().unwrap();
    match excluded.is_empty() {
        true => assert!(
            verdict.contains("every 95% interval includes 0"),
            "{verdict}"
        ),
        false => assert!(
            excluded
                .iter()
                .all(|k| verdict.contains(&format!("{k} (B "))),
            "{verdict}"
        ),
    }
    // Another seed draws other resamples.
    let other = ccma_json(&[
        "compare",
        s(a),
        s(b),
        "--resamples",
        "2000",
        "--seed",
        "8",
        "--json",
    ]);
    assert_ne!(other["metrics"], ours["metrics"]);
}

#[test]
fn compare_refuses_other_queries_and_says_what_to_run() {
    let Runs {
        a, d, elsewhere, ..
    } = runs();
    // synth_seed 4 generates another TOY-PEDES: other test queries.
    let out = ccma(&["compare", s(a), s(elsewhere)]);
    assert_one_line_error(&out, "hold different query sets");
    assert_eq!(out.status.code(), Some(2));
    let out = ccma(&["compare", s(a), s(d)]);
    assert_one_line_error(
        &out,
        &format!(
            "run `ccma test --config {}` first",
            d.join("configs.yaml").display()
        ),
    );
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.queries.jsonl");
    let good = std::fs::read_to_string(results_file(a, "test", ".queries.jsonl")).unwrap();
    std::fs::write(&bad, good.replacen("\"rank\":", "\"rank\":-", 1)).unwrap();
    assert_one_line_error(
        &ccma(&["compare", s(&bad), s(a)]),
        "bad.queries.jsonl line 1:",
    );
    let out = ccma(&["compare", s(a), s(a), "--resamples", "0"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn compare_and_summarize_end_quietly_on_a_closed_stdout() {
    let Runs { a, c, d, .. } = runs();
    for json in [false, true] {
        let mut args = vec!["compare", s(a), s(c)];
        args.extend(json.then_some("--json"));
        with_closed_stdout(&args, "");
    }
    for format in [None, Some("--json"), Some("--csv")] {
        let mut args = vec!["summarize", s(a), s(c), s(d)];
        args.extend(format);
        with_closed_stdout(&args, "");
    }
}

#[test]
fn summarize_of_three_seeds_equals_numpy() {
    let Runs { a, b, c, d, .. } = runs();
    let out = ccma_json(&["summarize", s(a), s(c), s(d), s(b), "--json"]);
    let groups = out["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{out}");
    assert_eq!(groups[0]["seeds"], serde_json::json!([3, 4, 5]));
    let theirs: Value = serde_json::from_str(&reference(
        "reporting_ref.py",
        &["summarize", s(a), s(c), s(d)],
    ))
    .unwrap();
    for k in METRICS {
        for stat in ["mean", "std"] {
            let (x, y) = (
                groups[0][stat][k].as_f64().unwrap(),
                theirs[stat][k].as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-9, "{stat} {k}: ours {x}, numpy {y}");
        }
    }
    assert!(
        groups[1]["std"].is_null(),
        "one run has no standard deviation"
    );
    assert_eq!(
        groups[0]["also_differ_in"],
        serde_json::json!(["name", "run_dir"])
    );
    let keys: Vec<&String> = groups[1]["differs_from_group_1"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["lr", "num_epoch"], "{out}");
    let md = String::from_utf8(ccma_ok(&["summarize", s(a), s(c), s(d), s(b)]).stdout).unwrap();
    let r1 = |stat: &str| groups[0][stat]["R1"].as_f64().unwrap();
    assert!(
        md.contains(&format!("{:.2} ± {:.2}", r1("mean"), r1("std"))),
        "{md}"
    );
    assert!(
        md.contains("group 2 differs from group 1") && md.contains("lr (0.002 vs 0.0005)"),
        "{md}"
    );
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| ")).count(),
        1 + 4 + 1 + 1,
        "{md}"
    );
    let csv = String::from_utf8(ccma_ok(&["summarize", s(a), s(c), s(d), "--csv"]).stdout).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows.len(), 1 + 3 + 2, "{csv}");
    assert!(
        rows[4].starts_with("mean,1,") && rows[5].starts_with("std,1,"),
        "{csv}"
    );
    assert_one_line_error(&ccma(&["summarize", s(a), s(a)]), "is given twice");
}

#[test]
fn val_is_refused_where_there_is_no_validation_split() {
    let dir = tempfile::tempdir().unwrap();
    let out = ccma(&[
        "train",
        "--dataset",
        "ICFG-PEDES",
        "--set",
        "val_dataset=val",
        "--run-dir",
        s(&dir.path().join("run")),
    ]);
    assert_one_line_error(
        &out,
        "invalid value for `val_dataset`: val, but ICFG-PEDES has no validation split",
    );
    assert_eq!(out.status.code(), Some(2));
    // A set whose annotations have no validation entries.
    let root = tempfile::tempdir().unwrap();
    fixture(
        root.path(),
        "CUHK-PEDES",
        "reid_raw.json",
        "file_path",
        &ENTRIES[..5],
    );
    let cfg = tiny_cuhk_config(dir.path(), root.path());
    let out = train_command(&cfg, &dir.path().join("run"), &["--set", "val_dataset=val"])
        .output()
        .unwrap();
    assert_one_line_error(&out, "no entries with split \"val\"");
    let ck = dir.path().join("best.safetensors");
    let out = ccma(&[
        "test",
        "--config",
        s(&cfg),
        "--checkpoint",
        s(&ck),
        "--split",
        "val",
    ]);
    assert_one_line_error(&out, "no entries with split \"val\"");
    assert_eq!(out.status.code(), Some(2));
}

/// Copies the files of `from` (no subfolders) into a new folder `to`.
fn copy_files(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn summarize_refuses_a_copied_run_and_never_mixes_data() {
    let Runs { a, c, .. } = runs();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("copy_of_a");
    copy_files(a, &copy);
    let out = ccma(&["summarize", s(a), s(c), s(&copy)]);
    assert_one_line_error(
        &out,
        "trained the same config on the same data with the same seed 3 (a copied run folder?)",
    );
    assert_eq!(out.status.code(), Some(2));
    // Another seed on other data (another annotation file, other test queries): its own group.
    let config = copy.join("configs.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replace("\nseed: 3\n", "\nseed: 9\n")).unwrap();
    let results = copy.join("results.json");
    let mut r = json_file(&results);
    assert!(r["data"]["annotations_sha256"].is_string(), "{r}");
    r["data"]["annotations_sha256"] = "0".repeat(64).into();
    r["data"]["test_queries"] = 54.into();
    std::fs::write(&results, r.to_string()).unwrap();
    let out = ccma_json(&["summarize", s(a), s(c), s(&copy), "--json"]);
    let groups = out["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{out}");
    assert_eq!(groups[0]["seeds"], serde_json::json!([3, 4]));
    let keys: Vec<&String> = groups[1]["differs_from_group_1"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(keys, ["data"], "{out}");
}

/// A verdict needs enough queries; records that measured other data, a checkpoint since
/// replaced, or that contradict themselves or their gallery are refused in one line.
#[test]
fn compare_checks_what_the_records_measured_and_that_they_hold_together() {
    let Runs { a, b, c, .. } = runs();
    let dir = tempfile::tempdir().unwrap();
    // Five queries: intervals, but no verdict.
    let few = |run: &Path, name: &str| {
        let text = std::fs::read_to_string(results_file(run, "test", ".queries.jsonl")).unwrap();
        let path = dir.path().join(format!("{name}.queries.jsonl"));
        let lines: Vec<&str> = text.lines().take(5).collect();
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        path
    };
    let (fa, fb) = (few(a, "fa"), few(b, "fb"));
    let out = ccma_json(&["compare", s(&fa), s(&fb), "--json"]);
    let verdict = out["verdict"].as_str().unwrap();
    assert!(
        verdict.starts_with("verdict: none (over 5 queries")
            && verdict.ends_with("a verdict needs at least 30 queries"),
        "{verdict}"
    );
    // A record of other data (its settings name another dataset folder), the same queries.
    let copy_record = |name: &str, edit: &dyn Fn(&mut Value), line: &dyn Fn(&mut Value)| {
        let json = dir.path().join(format!("{name}.json"));
        let mut record = json_file(&results_file(c, "test", ".json"));
        edit(&mut record);
        std::fs::write(&json, record.to_string()).unwrap();
        let text = std::fs::read_to_string(results_file(c, "test", ".queries.jsonl")).unwrap();
        let mut lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        line(&mut lines[0]);
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(dir.path().join(format!("{name}.queries.jsonl")), text).unwrap();
        json
    };
    let other = copy_record(
        "other",
        &|r| r["settings"]["dataset_dir"] = "/elsewhere".into(),
        &|_| {},
    );
    let out = ccma(&["compare", s(c), s(&other)]);
    assert_one_line_error(&out, "measured other data: `dataset_dir` is");
    assert_eq!(out.status.code(), Some(2));
    // Records that contradict themselves or their gallery.
    for (name, rank, ap, why) in [
        ("far", u64::MAX, 1e-3, "rank beyond the"),
        ("tiny", 1, 1e-300, "AP below 1 / (rank x matches)"),
        (
            "miss",
            2,
            1.0,
            "AP and INP are 1 only when the first match is at rank 1, not 2",
        ),
    ] {
        let bad = copy_record(name, &|_| {}, &|l| {
            l["rank"] = rank.into();
            l["AP"] = ap.into();
            l["INP"] = 0.5.into();
        });
        let out = ccma(&["compare", s(c), s(&bad)]);
        assert_one_line_error(&out, why);
        assert_eq!(out.status.code(), Some(2));
    }
    // A test of a checkpoint that has been replaced since is stale.
    let moved = dir.path().join("moved");
    std::fs::create_dir(&moved).unwrap();
    let ck = moved.join("best.safetensors");
    std::fs::copy(c.join("best.safetensors"), &ck).unwrap();
    ccma_ok(&[
        "test",
        "--config",
        s(&c.join("configs.yaml")),
        "--checkpoint",
        s(&ck),
    ]);
    ccma_ok(&["compare", s(c), s(&moved)]);
    let earlier = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&ck)
        .unwrap()
        .set_modified(earlier)
        .unwrap();
    let out = ccma(&["compare", s(c), s(&moved)]);
    assert_one_line_error(&out, "measured an earlier");
    assert_eq!(out.status.code(), Some(2));
}
