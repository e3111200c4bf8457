//! Config errors through the binary: one line on stderr naming the key or file, exit code 2.
use std::process::Command;

fn ccma(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ccma"))
        .args(args)
        .output()
        .expect("run ccma");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
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
    assert!(err.contains("invalid value for `dataset_name`"), "{err}");
}

#[test]
fn shipped_configs_load_and_saved_config_round_trips() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for name in ["cuhk-pedes", "icfg-pedes", "rstpreid", "demo"] {
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

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "train", "test", "embed", "rank", "search", "tokenize", "stats", "bench", "info",
    ] {
        let (code, out, _) = ccma(&[cmd, "--help"]);
        assert_eq!(code, 0, "{cmd} --help");
        assert!(out.contains("Usage: ccma"), "{cmd}: {out}");
    }
}
