//! Config errors through the binary: one line on stderr naming the key or file, exit code 2; and
//! IRRA's and CCMA's README command lines, run as written.
mod common;

/// `ccma args`: its exit code, stdout and stderr.
fn ccma(args: &[&str]) -> (i32, String, String) {
    let out = common::ccma(args);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Asserts `ccma args` fails as bad input (exit 2) with one error line containing `needle`.
fn refused(args: &[&str], needle: &str) {
    let (code, _, err) = ccma(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(err.contains(needle), "{args:?}: {err}");
}

/// Runs `ccma train --config <yaml>` and returns its one-line error.
fn config_error(yaml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    let (code, _, err) = ccma(&["train", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "exit code for {yaml:?}: {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "one line for {yaml:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(path.to_str().unwrap()),
        "names the file: {err}"
    );
    err
}

#[test]
fn unknown_key_suggests_nearest() {
    assert!(config_error("bach_size: 4\n")
        .contains("unknown key `bach_size` (did you mean `batch_size`?)"));
    assert!(config_error("loss_name: sdm\n").contains("did you mean `loss_names`?"));
}

#[test]
fn wrong_type_names_key_expected_and_got() {
    let e = config_error("num_epoch: ten\n");
    assert!(
        e.contains("wrong type for `num_epoch`: got ten") && e.contains("expected usize"),
        "{e}"
    );
    let e = config_error("img_size: 384\n");
    assert!(e.contains("wrong type for `img_size`"), "{e}");
}

#[test]
fn invalid_values_name_key() {
    assert!(config_error("dca_heads: 7\n").contains("invalid value for `dca_heads`: 7"));
    assert!(config_error("dataset_name: Market1501\n")
        .contains("invalid value for `dataset_name`: \"Market1501\""));
    assert!(config_error("loss_names: sdm+triplet\n").contains("unknown loss \"triplet\""));
    assert!(config_error("lr: -1.0\n").contains("invalid value for `lr`"));
}

#[test]
fn invalid_yaml_and_missing_file() {
    assert!(config_error("batch_size: [1,\n").contains("invalid YAML"));
    let (code, _, err) = ccma(&["train", "--config", "/nonexistent/cfg.yaml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read config file /nonexistent/cfg.yaml"),
        "{err}"
    );
}

#[test]
fn flags_and_set_are_checked_too() {
    let (code, _, err) = ccma(&["train", "--set", "temprature=0.1"]);
    assert_eq!(code, 2);
    assert!(err.contains("did you mean `temperature`?"), "{err}");
    let (code, _, err) = ccma(&["train", "--dataset", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--dataset")
            && err.contains("(expected one of CUHK-PEDES, ICFG-PEDES, RSTPReid, TOY-PEDES)"),
        "{err}"
    );
    let (code, _, err) = ccma(&["train", "--loss-names", "sdm+triplet"]);
    assert_eq!(code, 2);
    assert!(err.contains("unknown loss \"triplet\""), "{err}");
}

/// SYNTH-PEDES, the generated set's name in earlier releases, is PLIP's pre-training set: a new
/// config that names it is refused, however it is given, naming TOY-PEDES.
#[test]
fn synth_pedes_is_refused_naming_toy_pedes() {
    let why = "\"SYNTH-PEDES\" is PLIP's 4.7M-image person pre-training set";
    let now = "is now called TOY-PEDES";
    for args in [
        &["train", "--dataset", "SYNTH-PEDES"][..],
        &["train", "--set", "dataset_name=SYNTH-PEDES"],
        &["stats", "--dataset", "SYNTH-PEDES"],
    ] {
        let (code, _, err) = ccma(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.contains(why) && first.contains(now),
            "{args:?}: {err}"
        );
    }
    let e = config_error("dataset_name: SYNTH-PEDES\n");
    assert!(
        e.contains("invalid value for `dataset_name`: ") && e.contains(why) && e.contains(now),
        "{e}"
    );
}

#[test]
fn closed_sets_refuse_unknown_values_with_the_valid_list() {
    for (key, valid) in [
        ("sampler", "random, identity"),
        ("lrscheduler", "cosine, step, exp, poly, linear"),
        ("warmup_method", "linear, constant"),
        ("optimizer", "Adam, AdamW"),
    ] {
        let e = config_error(&format!("{key}: nope\n"));
        assert!(
            e.contains(&format!(
                "invalid value for `{key}`: \"nope\" (expected one of {valid})"
            )),
            "{e}"
        );
        let (code, _, err) = ccma(&["train", "--set", &format!("{key}=nope")]);
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(&format!("--set {key}=nope: invalid value for `{key}`")),
            "{err}"
        );
    }
}

#[test]
fn a_flag_and_set_on_the_same_key_are_refused() {
    let (code, _, err) = ccma(&["train", "--num-epoch", "3", "--set", "num_epoch=5"]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "`num_epoch` is given twice, by --num-epoch 3 and by --set num_epoch=5: give it once"
        ),
        "{err}"
    );
}

/// A key given twice, in any two of its spellings, is refused naming both; a bad value from a
/// flag or `--set` is blamed on it, not on the config file that does not set it.
#[test]
fn a_key_given_twice_is_refused_and_a_bad_value_is_blamed_on_where_it_came_from() {
    for (line, both) in [
        (
            &["--lr", "1e-4", "--set", "lr=2e-4"][..],
            "by --lr 1e-4 and by --set lr=2e-4",
        ),
        (
            &["--lr", "1e-4", "--lr", "2e-4"],
            "by --lr 1e-4 and by --lr 2e-4",
        ),
        (
            &["--val_dataset", "test", "--set", "val_dataset=val"],
            "by --val_dataset test and by --set val_dataset=val",
        ),
        (
            &["--set", "lr=1", "--set", "lr=2"],
            "by --set lr=1 and by --set lr=2",
        ),
    ] {
        let mut args = vec!["train"];
        args.extend(line);
        refused(&args, &format!("is given twice, {both}: give it once"));
    }
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/demo.yaml");
    let demo = demo.to_str().unwrap();
    refused(
        &["train", "--config", demo, "--micro-batch", "0"],
        "error: --micro-batch 0: invalid value for `micro_batch`",
    );
    refused(
        &["train", "--config", demo, "--set", "dropout=0.1"],
        "error: --set dropout=0.1: invalid value for `dropout`",
    );
    let e = config_error("dropout: 0.1\n");
    assert!(e.contains("invalid value for `dropout`"), "{e}");
}

/// Any split other than train and test is validation, for `test --split val` as for `stats`;
/// and `test --checkpoint` with no configs.yaml beside it reads the image size and caption
/// length the checkpoint records, as `embed` and `search` do, whatever else `--set` gives.
#[test]
fn a_validation_split_of_any_name_and_the_checkpoints_own_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let mut entries = common::ENTRIES;
    entries[5].0 = "dev";
    common::fixture(&root, "CUHK-PEDES", "reid_raw.json", "file_path", &entries);
    let cfg = common::tiny_cuhk_config(dir.path(), &root);
    let ck = dir.path().join("alone/best.safetensors");
    std::fs::create_dir(ck.parent().unwrap()).unwrap();
    common::tiny_checkpoint(&cfg, &ck, |t| t);
    let (code, out, err) = ccma(&[
        "stats",
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("| val ") && l.contains("| 1 ")),
        "{out}"
    );
    let ck_s = ck.to_str().unwrap();
    let data = [
        "--dataset",
        "CUHK-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
    ];
    let mut args = vec![
        "test",
        "--checkpoint",
        ck_s,
        "--split",
        "val",
        "--set",
        "test_batch_size=2",
        "--json",
    ];
    args.extend(data);
    let (code, _, err) = ccma(&args);
    assert_eq!(code, 0, "{err}");
    let record = std::fs::read_dir(ck.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.to_str().unwrap().ends_with(".json") && p.to_str().unwrap().contains("val_results.")
        })
        .expect("a val record");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(record).unwrap()).unwrap();
    assert_eq!(record["settings"]["img_size"], serde_json::json!([32, 16]));
    assert_eq!(record["settings"]["text_length"], 16);
    assert_eq!(record["test_batch_size"], 2);
}

#[test]
fn a_backbone_without_weights_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let (code, _, err) = ccma(&[
        "train",
        "--dataset",
        "TOY-PEDES",
        "--root-dir",
        root.to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(
            "`pretrain_choice` is \"ViT-B/16\" but no weights were given: pass --pretrained FILE"
        ),
        "{err}"
    );
    assert!(!root.exists(), "nothing generated");
}

#[test]
fn a_set_that_would_have_no_effect_is_refused() {
    refused(
        &["stats", "--set", "lr=1e-3"],
        "--set lr: `ccma stats` does not use `lr` (it uses dataset_name, root_dir, synth_ids, synth_seed)",
    );
    refused(
        &[
            "test",
            "--checkpoint",
            "best.safetensors",
            "--set",
            "num_epoch=3",
        ],
        "--set num_epoch: `ccma test` does not use `num_epoch`",
    );
}

#[test]
fn resume_takes_no_config_flags_but_epochs_and_micro_batch() {
    let rule = "--resume continues a run with the configs.yaml in its folder: only --num-epoch and --micro-batch may change it";
    for (flag, value) in [
        ("--batch-size", "3"),
        ("--device", "cpu"),
        ("--dataset", "RSTPReid"),
        ("--name", "x"),
        ("--set", "lr=1e-4"),
        ("--lr", "1e-4"),
    ] {
        let shown = if flag == "--lr" { "--set" } else { flag };
        refused(
            &["train", "--resume", "somewhere", flag, value],
            &format!("{rule}, not {shown}"),
        );
    }
    // The two it takes pass the rule (and the missing folder stops the command).
    for (flag, value) in [("--num-epoch", "3"), ("--micro-batch", "auto")] {
        let (code, _, err) = ccma(&["train", "--resume", "/nonexistent/run", flag, value]);
        assert_ne!(code, 0, "{flag}: {err}");
        assert!(!err.contains(rule), "{flag}: {err}");
        assert!(err.contains("/nonexistent/run"), "{flag}: {err}");
    }
}

/// `ccma --help` lists each command on one short line; the details are in the command's own
/// `--help`.
#[test]
fn the_command_list_is_one_short_line_each_and_the_details_are_the_commands() {
    let (code, out, _) = ccma(&["--help"]);
    assert_eq!(code, 0);
    let listed: Vec<&str> = out
        .split("Commands:")
        .nth(1)
        .unwrap()
        .split("\n\n")
        .next()
        .unwrap()
        .lines()
        .skip(1)
        .collect();
    assert!(listed.len() >= 14, "{out}");
    for line in &listed {
        assert!(
            line.starts_with("  ") && !line.starts_with("   "),
            "a continued line: {line:?}"
        );
        assert!(line.len() <= 80, "{line:?}");
    }
    let test_line = listed
        .iter()
        .find(|l| l.trim_start().starts_with("test "))
        .unwrap();
    assert!(!test_line.contains("SHA-256"), "{test_line}");
    let (code, out, _) = ccma(&["test", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("SHA-256"), "{out}");
}

/// `ccma train` with no config trains the paper's CUHK-PEDES run, as the README says.
#[test]
fn the_defaults_are_the_papers_cuhk_pedes_config() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let shipped = ccma::config::Config::from_file(&root.join("configs/cuhk-pedes.yaml")).unwrap();
    assert_eq!(shipped, ccma::config::Config::default());
}

#[test]
fn shipped_configs_load_and_saved_config_round_trips() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "cuhk-pedes",
        "icfg-pedes",
        "rstpreid",
        "demo",
        "rde-cuhk-pedes",
        "rde-icfg-pedes",
        "rde-rstpreid",
    ] {
        let cfg =
            ccma::config::Config::from_file(&root.join(format!("configs/{name}.yaml"))).unwrap();
        let saved = dir.path().join(format!("{name}.yaml"));
        cfg.save(&saved).unwrap();
        assert_eq!(
            ccma::config::Config::from_file(&saved).unwrap(),
            cfg,
            "{name}"
        );
    }
}

/// The flags `ccma <command> --help` lists (besides `--help` and the global `--log`).
fn flags_of(cmd: &str) -> Vec<String> {
    let (code, out, _) = ccma(&[cmd, "--help"]);
    assert_eq!(code, 0, "{cmd} --help");
    assert!(out.contains("Usage: ccma"), "{cmd}: {out}");
    let mut flags: Vec<String> = out
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .map(|l| l.split([' ', '<']).next().unwrap().to_string())
        .filter(|f| f != "help" && f != "log")
        .collect();
    flags.sort();
    flags
}

#[test]
fn every_subcommand_lists_only_its_own_flags() {
    let want: [(&str, &[&str]); 11] = [
        (
            "train",
            &[
                "batch-size",
                "config",
                "dataset",
                "device",
                "loss-names",
                "micro-batch",
                "name",
                "nproc-per-node",
                "num-epoch",
                "output-dir",
                "pretrained",
                "resume",
                "root-dir",
                "run-dir",
                "set",
            ],
        ),
        (
            "test",
            &[
                "checkpoint",
                "config",
                "dataset",
                "device",
                "i2t",
                "json",
                "root-dir",
                "set",
                "split",
                "visualize",
            ],
        ),
        (
            "embed",
            &[
                "batch-size",
                "captions",
                "checkpoint",
                "device",
                "force",
                "image-dir",
                "images",
                "img-size",
                "out",
                "pretrained",
            ],
        ),
        (
            "rank",
            &[
                "gallery",
                "gallery-pids",
                "i2t",
                "json",
                "queries",
                "query-pids",
                "similarity",
            ],
        ),
        (
            "search",
            &[
                "checkpoint",
                "device",
                "force",
                "gallery",
                "json",
                "out",
                "pretrained",
                "top-k",
            ],
        ),
        (
            "serve",
            &[
                "checkpoint",
                "device",
                "gallery",
                "host",
                "images-root",
                "port",
                "pretrained",
                "run",
            ],
        ),
        ("tokenize", &["text-length"]),
        ("stats", &["config", "dataset", "root-dir", "set"]),
        (
            "bench",
            &[
                "batch-size",
                "device",
                "json",
                "loss-names",
                "micro-batch",
                "steps",
                "with-loader",
            ],
        ),
        ("export", &["force", "format"]),
        ("info", &[]),
    ];
    for (cmd, flags) in want {
        assert_eq!(flags_of(cmd), flags, "{cmd} --help");
    }
}

/// Every numeric key and flag has its range; a value outside it is one line naming the key or
/// flag, before any work (nothing reaches libtorch or an allocator).
#[test]
fn out_of_range_values_are_refused_by_name() {
    for (set, needle) in [
        (
            "name=../../x",
            "invalid value for `name`: \"../../x\" (expected a plain name",
        ),
        (
            "batch_size=1",
            "invalid value for `batch_size`: 1 (expected a number from 2 to",
        ),
        (
            "vocab_size=1000",
            "invalid value for `vocab_size`: 1000 (expected at least 49408",
        ),
        (
            "text_length=100000",
            "invalid value for `text_length`: 100000",
        ),
        ("embed_dim=0", "invalid value for `embed_dim`: 0"),
        (
            "img_size=[100000, 128]",
            "invalid value for `img_size`: 100000",
        ),
        (
            "dropout=0.1",
            "invalid value for `dropout`: 0.1 (dropout is not implemented",
        ),
        (
            "masked_token_rate=1.5",
            "invalid value for `masked_token_rate`: 1.5",
        ),
        (
            "milestones=[50, 20]",
            "invalid value for `milestones`: [50, 20] (expected increasing epochs)",
        ),
        (
            "beta=1.0",
            "invalid value for `beta`: 1 (expected 0 <= value < 1)",
        ),
        (
            "lr=.inf",
            "invalid value for `lr`: inf (expected a positive number)",
        ),
    ] {
        let (code, _, err) = ccma(&["train", "--set", set]);
        assert_eq!(code, 2, "{set}: {err}");
        assert_eq!(err.lines().count(), 1, "{set}: {err}");
        assert!(err.contains(needle), "{set}: {err}");
    }
    for (args, needle) in [
        (
            &["tokenize", "--text-length", "100000"][..],
            "--text-length 100000: invalid value for `text_length`: 100000 (expected a number from 2 to 1024)",
        ),
        (
            &["tokenize", "--text-length", "1"][..],
            "--text-length 1: invalid value for `text_length`: 1 (expected a number from 2 to 1024)",
        ),
        (&["bench", "--steps", "0"][..], "--steps"),
        (
            &[
                "search",
                "--pretrained",
                "x.pt",
                "--gallery",
                "g",
                "--top-k",
                "0",
                "q",
            ][..],
            "--top-k",
        ),
        (
            &[
                "embed",
                "--pretrained",
                "x.pt",
                "--captions",
                "c",
                "--out",
                "o",
                "--batch-size",
                "0",
            ][..],
            "--batch-size",
        ),
        (
            &[
                "embed",
                "--pretrained",
                "x.pt",
                "--captions",
                "c",
                "--out",
                "o",
                "--img-size",
                "0x5",
            ][..],
            "--img-size",
        ),
        (&["--log", "ccma=[[[", "info"][..], "invalid log filter"),
        (
            &["search", "--pretrained", "x.pt", "--gallery", "g", "  "][..],
            "the query is empty",
        ),
    ] {
        let (code, _, err) = ccma(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

/// CCMA's README commands, `python train.py` / `python test.py` replaced by `ccma train` /
/// `ccma test`, on TOY-PEDES at the demo's sizes (one epoch, 40 identities).
#[test]
fn ccmas_readme_commands_run_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let (data, logs) = (dir.path().join("data"), dir.path().join("logs"));
    let (code, _, err) = ccma(&[
        "train",
        "--config",
        root.join("configs/demo.yaml").to_str().unwrap(),
        "--set",
        "synth_ids=[40,10,20]",
        "--output_dir",
        logs.to_str().unwrap(),
        // CCMA's README line, with the generated set and one epoch.
        "--name",
        "ccma",
        "--img_aug",
        "--batch_size",
        "64",
        "--MLM",
        "--loss_names",
        "imal",
        "--dataset_name",
        "TOY-PEDES",
        "--root_dir",
        data.to_str().unwrap(),
        "--num_epoch",
        "1",
        "--log_period",
        "2",
    ]);
    assert_eq!(code, 0, "{err}");
    // Every second step of the epoch is logged, and only those.
    let logged: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("epoch 1 step "))
        .collect();
    assert!(!logged.is_empty(), "{err}");
    for line in logged {
        let step: usize = line
            .split("epoch 1 step ")
            .nth(1)
            .unwrap()
            .split('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(step % 2, 0, "{line}");
    }
    let runs: Vec<_> = std::fs::read_dir(logs.join("TOY-PEDES"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(runs[0].to_string_lossy().ends_with("_ccma"), "{runs:?}");
    let config = runs[0].join("configs.yaml");
    let saved = ccma::config::Config::from_file(&config).unwrap();
    assert!(saved.data.img_aug && saved.loss.MLM);
    assert_eq!(saved.data.batch_size, 64);
    assert_eq!(saved.loss.loss_names.to_string(), "imal");
    assert_eq!(saved.optim.num_epoch, 1);
    let (code, out, err) = ccma(&["test", "--config_file", config.to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{err}");
    let metrics: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(metrics["t2i"]["R1"].as_f64().is_some(), "{metrics}");
}

#[test]
fn irras_flags_that_would_not_act_are_refused_with_what_to_use() {
    refused(
        &["train", "--momentum", "0.9"],
        "ccma's optimizers are Adam and AdamW",
    );
    refused(
        &["train", "--resume_ckpt_file", "last.pth"],
        "ccma train --resume RUN_DIR",
    );
    refused(&["train", "--lr"], "--lr (IRRA's flag) expects a value");
}
