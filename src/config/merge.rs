//! Building a [`Config`] from layers: the defaults, a YAML file, `--set key=value` overrides.
//!
//! Keys are checked before deserialisation so an unknown key is reported with the nearest valid
//! one; each key is then deserialised on its own so a type error names the key and the value.
use super::choices::INVALID;
use super::Config;
use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};
use std::path::Path;

/// The defaults as a YAML mapping (one entry per key, in declaration order).
fn defaults() -> Mapping {
    match serde_yaml::to_value(Config::default()) {
        Ok(Value::Mapping(m)) => m,
        _ => unreachable!("Config serialises to a mapping"),
    }
}

/// All valid keys, in declaration order.
pub fn valid_keys() -> Vec<String> {
    defaults()
        .keys()
        .filter_map(|k| k.as_str().map(String::from))
        .collect()
}

fn parse_mapping(text: &str) -> Result<Mapping> {
    let value: Value =
        serde_yaml::from_str(text).map_err(|e| anyhow::anyhow!("invalid YAML: {e}"))?;
    match value {
        Value::Mapping(m) => Ok(m),
        Value::Null => Ok(Mapping::new()),
        _ => bail!("expected a mapping of `key: value` lines at the top level"),
    }
}

fn check_key(key: &str, valid: &[String]) -> Result<()> {
    if valid.iter().any(|k| k == key) {
        return Ok(());
    }
    let nearest = valid
        .iter()
        .min_by_key(|k| edit_distance(&key.to_lowercase(), &k.to_lowercase()))
        .expect("there are valid keys");
    bail!("unknown key `{key}` (did you mean `{nearest}`?)")
}

/// Levenshtein distance between two strings (by characters).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Checks that `value` fits `key`'s type by deserialising the defaults with only that key
/// replaced; the error names the key (a bad name of a closed set is an invalid value, anything
/// else a wrong type).
fn check_type(defaults: &Mapping, key: &Value, value: &Value) -> Result<()> {
    let mut probe = defaults.clone();
    probe.insert(key.clone(), value.clone());
    let Err(e) = serde_yaml::from_value::<Config>(Value::Mapping(probe)) else {
        return Ok(());
    };
    let key = key.as_str().unwrap_or("?");
    let msg = e.to_string();
    let msg = msg.trim_start_matches(&format!("{key}: "));
    if let Some(detail) = msg.strip_prefix(INVALID) {
        bail!("invalid value for `{key}`: {detail}");
    }
    let got = serde_yaml::to_string(value).unwrap_or_default();
    bail!("wrong type for `{key}`: got {} ({msg})", got.trim())
}

/// The defaults with the mapping of `file` (an earlier release's run folder read as this release
/// reads it); keys and types checked, not validated.
pub(super) fn load(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let in_file = || format!("config file {}", path.display());
    let (valid, defaults) = (valid_keys(), defaults());
    let mut merged = defaults.clone();
    let keys = super::earlier_runs::update(path, parse_mapping(&text).with_context(in_file)?);
    let keys = super::authors_runs::read(path, keys).with_context(in_file)?;
    for (k, v) in keys {
        let key = k
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| format!("{k:?}"));
        check_key(&key, &valid).with_context(in_file)?;
        check_type(&defaults, &k, &v).with_context(in_file)?;
        merged.insert(k, v);
    }
    Ok(serde_yaml::from_value(Value::Mapping(merged))?)
}

/// `cfg` with each (`key`, YAML value) of `sets` replaced; keys and types checked, not validated.
pub(super) fn apply(cfg: &Config, sets: &[(String, String)]) -> Result<Config> {
    let (valid, defaults) = (valid_keys(), defaults());
    let mut merged = match serde_yaml::to_value(cfg)? {
        Value::Mapping(m) => m,
        _ => unreachable!("Config serialises to a mapping"),
    };
    for (key, raw) in sets {
        check_key(key, &valid)?;
        let value: Value = if raw.is_empty() {
            Value::Null
        } else {
            serde_yaml::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
        };
        let key = Value::String(key.clone());
        check_type(&defaults, &key, &value)?;
        merged.insert(key, value);
    }
    Ok(serde_yaml::from_value(Value::Mapping(merged))?)
}

/// Parses a `key=value` override from the command line.
pub fn parse_override(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("expected key=value, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_hand_values() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("lr", "lr"), 0);
    }

    #[test]
    fn override_syntax() {
        assert_eq!(
            parse_override("lr = 1e-4"),
            Ok(("lr".into(), "1e-4".into()))
        );
        assert!(parse_override("=3").is_err() && parse_override("lr").is_err());
    }
}
