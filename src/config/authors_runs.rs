//! A `configs.yaml` that IRRA's, CCMA's or RDE's `train.py` wrote, read as their `test.py` reads
//! it. Their `save_train_configs` dumps the whole argparse namespace with `yaml.dump`: the keys
//! of the method (ccma's own, under IRRA's names), the keys that only drove their process
//! ([`PROCESS_KEYS`]: read and set aside, named in the log once), the tuples of their defaults
//! (`img_size: !!python/tuple [384, 128]`, `milestones`: read as lists). RDE's keys (noise, TSE,
//! TAL) are ccma's own. Any other Python tag is refused, naming the key.
use anyhow::{bail, Result};
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// The keys of their options that steered their process, not the model or the data, with what
/// `ccma` does instead: set aside whatever their value.
pub const PROCESS_KEYS: [(&str, &str); 6] = [
    (
        "local_rank",
        "the rank of one of their processes (ccma takes it from torchrun's environment)",
    ),
    (
        "distributed",
        "whether their train.py ran on several GPUs (ccma starts its ranks itself, or takes torchrun's)",
    ),
    (
        "training",
        "whether their script trained or tested (ccma: the command)",
    ),
    (
        "resume",
        "whether their train.py resumed from resume_ckpt_file (ccma resumes a run folder of its own)",
    ),
    (
        "resume_ckpt_file",
        "the checkpoint their train.py resumed from (ccma resumes a run folder of its own)",
    ),
    (
        "momentum",
        "SGD's momentum, which Adam and AdamW, ccma's optimizers, do not read",
    ),
];

/// Python's tuple tag as `yaml.dump` writes it, in both of the forms a reader may give it.
fn is_python_tuple(tag: &serde_yaml::value::Tag) -> bool {
    *tag == "!!python/tuple" || *tag == "tag:yaml.org,2002:python/tuple"
}

/// The keys of config file `path`, with their process keys set aside and their tuples read as
/// lists.
pub(super) fn read(path: &Path, keys: Mapping) -> Result<Mapping> {
    let mut kept = Mapping::new();
    let mut set_aside = Vec::new();
    for (k, v) in keys {
        let name = k.as_str().unwrap_or_default();
        if PROCESS_KEYS.iter().any(|(p, _)| *p == name) {
            set_aside.push(name.to_string());
            continue;
        }
        let v = untuple(name, v)?;
        kept.insert(k, v);
    }
    if !set_aside.is_empty() {
        tracing::info!(
            "{}: set aside, as they only drove the process that wrote it: {}",
            path.display(),
            set_aside
                .iter()
                .map(|k| {
                    let why = PROCESS_KEYS
                        .iter()
                        .find(|(p, _)| p == k)
                        .map_or("", |p| p.1);
                    format!("`{k}` ({why})")
                })
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(kept)
}

/// `value` of `key` with Python tuples as lists (within lists too); another tag is refused.
fn untuple(key: &str, value: Value) -> Result<Value> {
    match value {
        Value::Tagged(t) if is_python_tuple(&t.tag) => untuple(key, t.value),
        Value::Tagged(t) => bail!(
            "wrong type for `{key}`: a value tagged {} (expected a plain YAML value)",
            t.tag
        ),
        Value::Sequence(items) => Ok(Value::Sequence(
            items
                .into_iter()
                .map(|v| untuple(key, v))
                .collect::<Result<_>>()?,
        )),
        v @ (Value::Null
        | Value::Bool(_)
        | Value::Number(_)
        | Value::String(_)
        | Value::Mapping(_)) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_yaml(yaml: &str) -> Result<Mapping> {
        read(
            Path::new("configs.yaml"),
            serde_yaml::from_str(yaml).unwrap(),
        )
    }

    #[test]
    fn tuples_are_lists_process_keys_are_set_aside_and_rdes_keys_read() {
        let m = read_yaml(
            "img_size: !!python/tuple\n- 384\n- 128\nlocal_rank: 0\ntraining: true\nlr: 1.0e-05\n",
        )
        .unwrap();
        let want: Mapping = serde_yaml::from_str("img_size: [384, 128]\nlr: 1.0e-05\n").unwrap();
        assert_eq!(m, want);
        // RDE's keys are ccma's own: read as any other.
        let m = read_yaml("noisy_rate: 0.2\ntau: 0.015\n").unwrap();
        assert_eq!(
            m,
            serde_yaml::from_str::<Mapping>("noisy_rate: 0.2\ntau: 0.015\n").unwrap()
        );
        let e = format!(
            "{:#}",
            read_yaml("img_size: !python/object:os.system [1]\n").unwrap_err()
        );
        assert!(
            e.starts_with("wrong type for `img_size`: a value tagged"),
            "{e}"
        );
    }

    #[test]
    fn no_process_key_is_a_config_key() {
        let keys = crate::config::valid_keys();
        for (k, _) in PROCESS_KEYS {
            assert!(!keys.contains(&k.to_string()), "{k}");
        }
    }
}
