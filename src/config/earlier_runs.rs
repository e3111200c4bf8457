//! Reading a run folder that an earlier release wrote, where it says what this release names or
//! draws otherwise.
//!
//! Earlier releases called the generated set SYNTH-PEDES (the name of PLIP's real pre-training
//! set, so it is TOY-PEDES now) and drew it from the run's `seed` (there was no `synth_seed`). A
//! run folder's `configs.yaml` (a run folder holds [`run_files::LOCK`]) that says SYNTH-PEDES is
//! read as TOY-PEDES, with `synth_seed` set to its `seed` when it has none, so that it tests and
//! resumes on the very set it trained on; this is logged once per process. Anywhere else the old
//! name is refused (`choices::SYNTH_PEDES`).
use super::choices::{DatasetName, SYNTH_PEDES};
use crate::io::run_files;
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// The keys of the config file `path`, as read, made what this release reads.
pub(super) fn update(path: &Path, mut keys: Mapping) -> Mapping {
    let in_run_folder = path
        .parent()
        .is_some_and(|dir| dir.join(run_files::LOCK).is_file());
    let name = Value::from("dataset_name");
    if !in_run_folder || keys.get(&name) != Some(&Value::from(SYNTH_PEDES)) {
        return keys;
    }
    let toy = DatasetName::ToyPedes.name();
    keys.insert(name, Value::from(toy));
    let synth_seed = Value::from("synth_seed");
    if !keys.contains_key(&synth_seed) {
        let seed = keys
            .get("seed")
            .cloned()
            .unwrap_or_else(|| Value::from(super::RunSection::default().seed));
        keys.insert(synth_seed, seed);
    }
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let seed = serde_yaml::to_string(&keys["synth_seed"]).unwrap_or_default();
        tracing::info!(
            "{}: the generated set this run names {SYNTH_PEDES} is now called {toy} ({SYNTH_PEDES} is PLIP's pre-training set); read as {toy} with synth_seed {}, the seed its set was drawn from",
            path.display(),
            seed.trim()
        );
    });
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(yaml: &str) -> Mapping {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn only_a_run_folders_config_reads_the_old_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(run_files::CONFIG);
        let old = mapping("dataset_name: SYNTH-PEDES\nseed: 3\n");
        assert_eq!(update(&path, old.clone()), old, "not a run folder");
        std::fs::write(dir.path().join(run_files::LOCK), "").unwrap();
        let read = update(&path, old);
        assert_eq!(read["dataset_name"], Value::from("TOY-PEDES"));
        assert_eq!(read["synth_seed"], Value::from(3));
        let kept = update(
            &path,
            mapping("dataset_name: SYNTH-PEDES\nseed: 3\nsynth_seed: 5\n"),
        );
        assert_eq!(kept["synth_seed"], Value::from(5));
        let unset = update(&path, mapping("dataset_name: SYNTH-PEDES\n"));
        assert_eq!(unset["synth_seed"], Value::from(1));
        let other = mapping("dataset_name: CUHK-PEDES\nseed: 3\n");
        assert_eq!(update(&path, other.clone()), other);
    }
}
