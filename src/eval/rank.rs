//! `ccma rank`: metrics from query and gallery feature files.
use super::metrics::{evaluate, table, to_json};
use crate::UsageError;
use anyhow::{bail, Result};
use std::path::Path;
use tch::{Kind, Tensor};

/// Features [N, D] f32 and pids [N] i64 read from a safetensors file, checked.
pub fn read_features(path: &Path) -> Result<(Tensor, Vec<i64>)> {
    let fail = |what: String| -> anyhow::Error {
        UsageError(format!("{}: {what}", path.display())).into()
    };
    if !path.is_file() {
        return Err(fail("no such file".into()));
    }
    let tensors = Tensor::read_safetensors(path)
        .map_err(|e| fail(format!("not a safetensors file ({e})")))?;
    let get = |name: &str| {
        tensors
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, t)| t.shallow_clone())
            .ok_or_else(|| {
                let names: Vec<&str> = tensors.iter().map(|(k, _)| k.as_str()).collect();
                fail(format!(
                    "missing tensor `{name}` (found: {})",
                    names.join(", ")
                ))
            })
    };
    let (features, pids) = (get("features")?, get("pids")?);
    if features.kind() != Kind::Float {
        return Err(fail(format!(
            "tensor `features` has dtype {:?}, expected f32",
            features.kind()
        )));
    }
    if pids.kind() != Kind::Int64 {
        return Err(fail(format!(
            "tensor `pids` has dtype {:?}, expected i64",
            pids.kind()
        )));
    }
    if features.dim() != 2 {
        return Err(fail(format!(
            "tensor `features` has shape {:?}, expected [N, D]",
            features.size()
        )));
    }
    if pids.dim() != 1 || pids.size()[0] != features.size()[0] {
        return Err(fail(format!(
            "tensor `pids` has shape {:?}, expected [{}] (one per feature row)",
            pids.size(),
            features.size()[0]
        )));
    }
    if features.size()[0] == 0 {
        return Err(fail("empty set: `features` has no rows".into()));
    }
    let non_finite = features
        .isfinite()
        .logical_not()
        .sum(Kind::Int64)
        .int64_value(&[]);
    if non_finite > 0 {
        return Err(fail(format!(
            "tensor `features` has {non_finite} NaN or infinite values, expected finite numbers"
        )));
    }
    Ok((features, Vec::<i64>::try_from(&pids)?))
}

/// `ccma rank`.
pub fn run(args: &crate::cli::RankArgs) -> Result<()> {
    let (qf, qp) = read_features(&args.queries)?;
    let (gf, gp) = read_features(&args.gallery)?;
    if qf.size()[1] != gf.size()[1] {
        bail!(UsageError(format!(
            "feature widths differ: {} has D = {}, {} has D = {}",
            args.queries.display(),
            qf.size()[1],
            args.gallery.display(),
            gf.size()[1]
        )));
    }
    let t2i = evaluate(&qf, &gf, &qp, &gp)?;
    let i2t = if args.i2t {
        Some(evaluate(&gf, &qf, &gp, &qp)?)
    } else {
        None
    };
    if args.json {
        let mut v = serde_json::json!({ "t2i": to_json(&t2i) });
        if let Some(m) = &i2t {
            v["i2t"] = to_json(m);
        }
        println!("{v}");
    } else {
        let mut rows = vec![("t2i", &t2i)];
        if let Some(m) = &i2t {
            rows.push(("i2t", m));
        }
        print!("{}", table(&rows));
    }
    Ok(())
}
