//! Zip reading: the archive's `data.pkl` and storages, each entry's declared size checked against
//! the budget and its real length, then the pickle machine over them.
use super::budget::Budget;
use super::machine::unpickle;
use super::value::Value;
use anyhow::{bail, Context, Result};
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

/// The one `data.pkl` of an archive: `data.pkl` or `<folder>/data.pkl`.
fn pickle_name<R: Read + std::io::Seek>(zip: &zip::ZipArchive<R>) -> Result<String> {
    let mut names: Vec<&str> = zip
        .file_names()
        .filter(|n| {
            n.strip_suffix("data.pkl")
                .is_some_and(|d| d.is_empty() || (d.ends_with('/') && d.matches('/').count() == 1))
        })
        .collect();
    names.sort();
    match names.as_slice() {
        [one] => Ok(one.to_string()),
        [] => bail!("no data.pkl: not a torch.save file or TorchScript archive"),
        many => bail!("{} data.pkl entries ({})", many.len(), many.join(", ")),
    }
}

/// The entry `name` of `zip`, of `expected` bytes when given: its declared size checked against
/// `budget` before anything is read, and the bytes it really holds against its declared size.
fn read_entry<R: Read + std::io::Seek>(
    zip: &mut zip::ZipArchive<R>,
    name: &str,
    expected: Option<u64>,
    budget: &mut Budget,
) -> Result<Vec<u8>> {
    let entry = zip
        .by_name(name)
        .with_context(|| format!("entry {name} is missing or unreadable"))?;
    let declared = entry.size();
    if let Some(e) = expected.filter(|&e| e != declared) {
        bail!("entry {name} declares {declared} bytes, not the {e} its tensor needs");
    }
    budget.charge(declared, &|| format!("entry {name}"))?;
    let mut buf = Vec::new();
    entry
        .take(declared.saturating_add(1))
        .read_to_end(&mut buf)
        .with_context(|| format!("entry {name} is corrupt"))?;
    if buf.len() as u64 != declared {
        bail!(
            "entry {name} holds {} bytes but declares {declared} (truncated or corrupt)",
            buf.len()
        );
    }
    Ok(buf)
}

/// The object saved in the archive at `path` (`torch.save` or TorchScript), tensors on the CPU
/// in their saved dtypes; a TorchScript archive's module tree as [`Value::Object`]s.
pub fn load_torch_zip(path: &Path) -> Result<Value> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let len = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a zip archive", path.display()))?;
    let pkl_name = pickle_name(&zip).with_context(|| path.display().to_string())?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let torchscript = zip.file_names().any(|n| {
        n.strip_prefix(prefix.as_str())
            .is_some_and(|rest| rest == "constants.pkl" || rest.starts_with("code/"))
    });
    let mut budget = Budget::for_file(len);
    let at = |e: anyhow::Error| e.context(path.display().to_string());
    let order = format!("{prefix}byteorder");
    if zip.file_names().any(|n| n == order) {
        let b = read_entry(&mut zip, &order, None, &mut budget).map_err(at)?;
        if b != b"little" {
            bail!(
                "{}: byte order {:?}: only little-endian archives are read",
                path.display(),
                String::from_utf8_lossy(&b)
            );
        }
    }
    let pickle = read_entry(&mut zip, &pkl_name, None, &mut budget).map_err(at)?;
    let mut read_storage =
        |key: &str, kind: Kind, numel: i64, budget: &mut Budget| -> Result<Tensor> {
            let name = format!("{prefix}data/{key}");
            let bytes = u64::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(kind.elt_size_in_bytes() as u64))
                .with_context(|| format!("storage {name} has {numel} elements"))?;
            let buf = read_entry(&mut zip, &name, Some(bytes), budget)?;
            Ok(Tensor::f_from_data_size(&buf, &[numel], kind)?)
        };
    unpickle(&pickle, torchscript, &mut budget, &mut read_storage)
        .with_context(|| format!("{}: {pkl_name}", path.display()))
}
