//! A run folder of an earlier release, whose `configs.yaml` calls the generated set SYNTH-PEDES and
//! has no `synth_seed` (the set was drawn from `seed`), through the binary: it tests, embeds and
//! resumes on the very set it trained on, read as TOY-PEDES, saying so in one log line. (A new
//! config naming SYNTH-PEDES is refused: `tests/cli_config.rs`.)
mod common;
use common::serve::{synth_dir, tiny_synth_run};
use common::*;
use std::path::Path;
use std::process::Output;

/// The lines of `out`'s stderr that say the set is now called TOY-PEDES.
fn renamed_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains("is now called TOY-PEDES"))
        .map(String::from)
        .collect()
}

/// Rewrites the run folder's `configs.yaml` as the release before TOY-PEDES wrote it.
fn as_earlier_release(run: &Path) {
    let path = run.join("configs.yaml");
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(
        now.contains("dataset_name: TOY-PEDES\n") && now.contains("synth_seed: 3\n"),
        "{now}"
    );
    let earlier = now
        .replace("dataset_name: TOY-PEDES\n", "dataset_name: SYNTH-PEDES\n")
        .replace("synth_seed: 3\n", "");
    std::fs::write(&path, earlier).unwrap();
}

/// The names of the folders under `dir`, sorted.
fn folders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_earlier_run_of_synth_pedes_tests_embeds_and_resumes_as_toy_pedes() {
    let dir = tempfile::tempdir().unwrap();
    // Trained with seed 3 and synth_seed 3, as an earlier release drew its set from seed 3.
    let run = tiny_synth_run(dir.path());
    let config = run.join("configs.yaml");
    let config = config.to_str().unwrap();
    let before = ccma_json(&["test", "--config", config, "--json"]);
    let data = dir.path().join("data");
    let set = synth_dir(&data, (24, 2, 10), 3);
    assert_eq!(folders(&data), ["TOY-PEDES-24-2-10-s3"]);

    as_earlier_release(&run);
    // The set is looked up under its new name, and generated again when missing.
    std::fs::remove_dir_all(&set).unwrap();
    let out = ccma_ok(&["test", "--config", config, "--json"]);
    let after: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        after["t2i"], before["t2i"],
        "the same test split, the same model"
    );
    let said = renamed_lines(&out);
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(
        said[0].contains("SYNTH-PEDES is PLIP's") && said[0].contains("synth_seed 3"),
        "{said:?}"
    );
    assert_eq!(folders(&data), ["TOY-PEDES-24-2-10-s3"]);
    let results: Vec<String> = folders(&run)
        .into_iter()
        .filter(|n| n.starts_with("test_results.") && n.ends_with(".json"))
        .collect();
    assert_eq!(results.len(), 1, "the same settings: {results:?}");
    assert!(results[0].contains(".TOY-PEDES."), "{results:?}");

    let image = std::fs::read_dir(set.join("imgs/synth"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = ccma_ok(&[
        "embed",
        "--checkpoint",
        run.join("best.safetensors").to_str().unwrap(),
        "--images",
        image.to_str().unwrap(),
        "--out",
        dir.path().join("one.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(renamed_lines(&out).len(), 1);

    let out = ccma_ok(&[
        "train",
        "--resume",
        run.to_str().unwrap(),
        "--num-epoch",
        "2",
    ]);
    assert_eq!(renamed_lines(&out).len(), 1);
    let epochs: Vec<i64> = metrics(&run)
        .iter()
        .map(|r| r["epoch"].as_i64().unwrap())
        .collect();
    assert_eq!(epochs, [1, 2]);
    assert_eq!(
        folders(&data),
        ["TOY-PEDES-24-2-10-s3"],
        "no other set drawn"
    );
    let saved = std::fs::read_to_string(run.join("configs.yaml")).unwrap();
    assert!(
        saved.contains("dataset_name: TOY-PEDES\n") && saved.contains("synth_seed: 3\n"),
        "the resumed run records the set's name now: {saved}"
    );
}
