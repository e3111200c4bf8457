//! The feature-file format: what `ccma embed` writes and `ccma rank` and `ccma search` read.
//!
//! A safetensors file with up to two sets of features, each an f32 matrix [N, D] (rows in input
//! order, not normalised) with optional person ids i64 [N]:
//! - `image_features` / `image_pids`, with the image paths as a JSON list in the metadata key
//!   `images` when the features came from files;
//! - `text_features` / `text_pids`;
//! - for a model with RDE's TSE layers, `image_tse_features` and `text_tse_features` [N, 2D] beside
//!   them (the same rows), which `search` reads for the `tse` and `bge+tse` similarities;
//! - or one set of either kind, unprefixed: `features` / `pids`.
//!
//! As queries, a file gives its `text_` set (else the unprefixed one); as a gallery, its `image_`
//! set (else the unprefixed one).
use crate::UsageError;
use anyhow::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// Which set of a feature file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Image,
    Text,
}

impl Side {
    fn prefix(self) -> &'static str {
        match self {
            Side::Image => "image_",
            Side::Text => "text_",
        }
    }
}

/// One set: features [N, D] f32, the TSE features of the same rows [N, 2D] when the model has
/// TSE, and, when known, one pid per row.
pub struct FeatureSet {
    pub features: Tensor,
    pub tse_features: Option<Tensor>,
    pub pids: Option<Vec<i64>>,
}

/// One set as read from a file.
pub struct ReadSet {
    pub set: FeatureSet,
    /// The image file of each row, when stored.
    pub paths: Vec<PathBuf>,
    /// The name the set's pids have (or would have) in the file.
    pub pids_key: String,
    /// The name the set's TSE features have (or would have) in the file.
    pub tse_key: String,
}

/// A feature file's contents.
#[derive(Default)]
pub struct FeatureFile {
    pub images: Option<FeatureSet>,
    pub texts: Option<FeatureSet>,
    /// The image file of each `images` row, when the features came from files.
    pub image_paths: Vec<PathBuf>,
}

impl FeatureFile {
    /// Writes the file atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        for (side, set) in [(Side::Image, &self.images), (Side::Text, &self.texts)] {
            let Some(set) = set else { continue };
            let p = side.prefix();
            tensors.push((format!("{p}features"), set.features.shallow_clone()));
            if let Some(tse) = &set.tse_features {
                tensors.push((format!("{p}tse_features"), tse.shallow_clone()));
            }
            if let Some(pids) = &set.pids {
                tensors.push((format!("{p}pids"), Tensor::from_slice(pids)));
            }
        }
        let mut meta = HashMap::new();
        if !self.image_paths.is_empty() {
            meta.insert(
                "images".to_string(),
                serde_json::to_string(&self.image_paths)?,
            );
        }
        crate::io::safetensors::save(path, &tensors, &meta)
    }

    /// Reads the set for `side` from `path`: the prefixed set, else the unprefixed one; checked
    /// (dtype, shape, finite values, pids matching the rows) with errors naming the file and tensor.
    pub fn read_set(path: &Path, side: Side) -> Result<ReadSet> {
        let fail = |what: String| -> anyhow::Error {
            UsageError(format!("{}: {what}", path.display())).into()
        };
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(fail("not a regular file".into())),
            Err(_) => return Err(fail("no such file".into())),
        }
        let (tensors, meta) = crate::io::safetensors::load(path)
            .map_err(|e| fail(format!("not a safetensors file ({e:#})")))?;
        let tensors: HashMap<String, Tensor> = tensors.into_iter().collect();
        let prefixed = format!("{}features", side.prefix());
        let prefix = if tensors.contains_key(&prefixed) {
            side.prefix()
        } else {
            ""
        };
        let features_key = format!("{prefix}features");
        let Some(features) = tensors.get(&features_key) else {
            let mut names: Vec<&str> = tensors.keys().map(String::as_str).collect();
            names.sort();
            return Err(fail(format!(
                "missing tensor `{prefixed}` or `features` (found: {})",
                names.join(", ")
            )));
        };
        check_features(features, &features_key).map_err(fail)?;
        let tse_key = format!("{prefix}tse_features");
        let tse_features = match tensors.get(&tse_key) {
            Some(t) => {
                check_features(t, &tse_key).map_err(fail)?;
                if t.size()[0] != features.size()[0] {
                    return Err(fail(format!(
                        "`{tse_key}` has {} rows, `{features_key}` {}: expected the same rows",
                        t.size()[0],
                        features.size()[0]
                    )));
                }
                Some(t.shallow_clone())
            }
            None => None,
        };
        let pids_key = format!("{prefix}pids");
        let pids = match tensors.get(&pids_key) {
            Some(p) => Some(check_pids(p, &pids_key, features.size()[0]).map_err(fail)?),
            None => None,
        };
        let paths = match (side, meta.get("images")) {
            (Side::Image, Some(json)) => serde_json::from_str::<Vec<PathBuf>>(json)
                .map_err(|_| fail("metadata `images` is not a JSON list of paths".into()))?,
            _ => Vec::new(),
        };
        if !paths.is_empty() && paths.len() as i64 != features.size()[0] {
            return Err(fail(format!(
                "{} image paths for {} feature rows",
                paths.len(),
                features.size()[0]
            )));
        }
        let set = FeatureSet {
            features: features.shallow_clone(),
            tse_features,
            pids,
        };
        Ok(ReadSet {
            set,
            paths,
            pids_key,
            tse_key,
        })
    }
}

fn check_features(f: &Tensor, key: &str) -> Result<(), String> {
    if f.kind() != Kind::Float {
        return Err(format!(
            "tensor `{key}` has dtype {:?}, expected f32",
            f.kind()
        ));
    }
    if f.dim() != 2 {
        return Err(format!(
            "tensor `{key}` has shape {:?}, expected [N, D]",
            f.size()
        ));
    }
    if f.size()[0] == 0 {
        return Err(format!("empty set: `{key}` has no rows"));
    }
    let bad = non_finite(f);
    if bad > 0 {
        return Err(format!(
            "tensor `{key}` has {bad} NaN or infinite values, expected finite numbers"
        ));
    }
    Ok(())
}

/// The number of NaN or infinite values in `t` (any shape, a floating-point kind).
pub fn non_finite(t: &Tensor) -> i64 {
    t.isfinite().logical_not().sum(Kind::Int64).int64_value(&[])
}

/// Refuses features that the model of `weights` gave on `on` (each tensor [N, D], a
/// floating-point kind) when any value is NaN or infinite: such a row would rank first (NaN
/// compares above every score) or poison every score. The [`UsageError`] counts them. Every
/// command that ranks or writes a model's features checks them here.
pub fn require_finite_output(features: &[&Tensor], weights: &Path, on: &str) -> Result<()> {
    let bad: i64 = features.iter().map(|f| non_finite(f)).sum();
    if bad > 0 {
        anyhow::bail!(UsageError(format!(
            "{}: the model gives {bad} NaN or infinite feature values on {on} (expected finite numbers; are its weights finite?)",
            weights.display()
        )));
    }
    Ok(())
}

fn check_pids(p: &Tensor, key: &str, rows: i64) -> Result<Vec<i64>, String> {
    if p.kind() != Kind::Int64 {
        return Err(format!(
            "tensor `{key}` has dtype {:?}, expected i64",
            p.kind()
        ));
    }
    if p.dim() != 1 || p.size()[0] != rows {
        return Err(format!(
            "tensor `{key}` has shape {:?}, expected [{rows}] (one per feature row)",
            p.size()
        ));
    }
    Vec::<i64>::try_from(p).map_err(|e| format!("tensor `{key}`: {e}"))
}

/// Person ids from a text file, one integer per line (blank lines skipped); errors name the file
/// and line.
pub fn read_pids_file(path: &Path) -> Result<Vec<i64>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("cannot read pids file {}: {e}", path.display())))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            l.trim().parse().map_err(|_| {
                UsageError(format!(
                    "{} line {}: {:?} is not an integer person id",
                    path.display(),
                    i + 1,
                    l.trim()
                ))
                .into()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sets_round_trip_and_unprefixed_serves_either_side() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.safetensors");
        let f = Tensor::from_slice(&[1f32, 2., 3., 4.]).view([2, 2]);
        FeatureFile {
            images: Some(FeatureSet {
                features: f.shallow_clone(),
                tse_features: Some(f.shallow_clone() * 3.0),
                pids: Some(vec![7, 8]),
            }),
            texts: Some(FeatureSet {
                features: f.shallow_clone() * 2.0,
                tse_features: None,
                pids: None,
            }),
            image_paths: vec!["a.jpg".into(), "b.jpg".into()],
        }
        .write(&p)
        .unwrap();
        let img = FeatureFile::read_set(&p, Side::Image).unwrap();
        assert!(img.set.features.equal(&f));
        assert_eq!(img.set.pids, Some(vec![7, 8]));
        assert!(img
            .set
            .tse_features
            .unwrap()
            .equal(&(f.shallow_clone() * 3.0)));
        assert_eq!(
            img.paths,
            vec![PathBuf::from("a.jpg"), PathBuf::from("b.jpg")]
        );
        let txt = FeatureFile::read_set(&p, Side::Text).unwrap();
        assert!(txt.set.features.equal(&(f.shallow_clone() * 2.0)) && txt.set.pids.is_none());
        assert!(txt.set.tse_features.is_none());
        assert_eq!(txt.pids_key, "text_pids");

        let q = dir.path().join("plain.safetensors");
        crate::io::safetensors::save(
            &q,
            &[("features".into(), f.shallow_clone())],
            &HashMap::new(),
        )
        .unwrap();
        for side in [Side::Image, Side::Text] {
            let r = FeatureFile::read_set(&q, side).unwrap();
            assert!(r.set.features.equal(&f) && r.pids_key == "pids");
        }
    }

    #[test]
    fn pids_file_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pids.txt");
        std::fs::write(&p, "3\n\n4\nx\n").unwrap();
        let e = format!("{:#}", read_pids_file(&p).unwrap_err());
        assert!(e.contains("line 4: \"x\" is not an integer"), "{e}");
        std::fs::write(&p, "3\n4\n").unwrap();
        assert_eq!(read_pids_file(&p).unwrap(), vec![3, 4]);
    }
}
