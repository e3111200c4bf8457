//! A restricted reader for PyTorch's `torch.save` files (the zip format that IRRA's and CCMA's
//! `best.pth` use): it rebuilds tensors and plain containers and nothing else.
//!
//! The pickle in `<archive>/data.pkl` is interpreted opcode by opcode. Only the globals that
//! describe tensors and containers are accepted (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the `torch.*Storage`
//! types); any other global (`os.system`, a model class, ...) is refused by name, as
//! `torch.load(weights_only=True)` does, so a crafted file never runs code. Storages are read
//! from `<archive>/data/<key>` and every tensor's size, stride and offset is checked against its
//! storage before it is viewed.
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use tch::{Kind, Tensor};

/// A value of the pickle.
#[derive(Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    /// Entries in insertion order (keys are usually strings).
    Dict(Vec<(Value, Value)>),
    Tensor(Tensor),
    /// An allowed global not yet applied (a callable or a storage type).
    Global(Global),
    /// A storage: its kind and the bytes read from the archive, as a 1-d tensor.
    Storage(Tensor),
    /// The MARK opcode's stack marker.
    Mark,
}

/// The globals the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(Kind),
}

impl Value {
    fn shallow(&self) -> Result<Value> {
        Ok(match self {
            Value::None => Value::None,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Bytes(b) => Value::Bytes(b.clone()),
            Value::Tensor(t) => Value::Tensor(t.shallow_clone()),
            Value::Storage(t) => Value::Storage(t.shallow_clone()),
            Value::Global(g) => Value::Global(*g),
            Value::Tuple(v) => Value::Tuple(v.iter().map(Value::shallow).collect::<Result<_>>()?),
            // Mutable containers shared through the memo are copied: a memo reference to a list
            // or dict that is later changed in place is not something a tensor file needs.
            Value::List(v) => Value::List(v.iter().map(Value::shallow).collect::<Result<_>>()?),
            Value::Dict(v) => Value::Dict(
                v.iter()
                    .map(|(k, x)| Ok((k.shallow()?, x.shallow()?)))
                    .collect::<Result<_>>()?,
            ),
            Value::Mark => bail!("a stack mark cannot be stored"),
        })
    }

    fn as_int(&self, what: &str) -> Result<i64> {
        match self {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            other => bail!("{what}: expected an integer, found {other:?}"),
        }
    }

    fn as_ints(&self, what: &str) -> Result<Vec<i64>> {
        match self {
            Value::Tuple(v) | Value::List(v) => v.iter().map(|x| x.as_int(what)).collect(),
            other => bail!("{what}: expected a tuple of integers, found {other:?}"),
        }
    }

    /// The entry `key` of a dict with string keys.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(entries) => entries
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The global `module.name`, if the reader accepts it.
fn allowed_global(module: &str, name: &str) -> Option<Global> {
    let storage = |kind| Some(Global::StorageType(kind));
    match (module, name) {
        ("collections", "OrderedDict") => Some(Global::OrderedDict),
        ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
        ("torch", "FloatStorage") => storage(Kind::Float),
        ("torch", "HalfStorage") => storage(Kind::Half),
        ("torch", "BFloat16Storage") => storage(Kind::BFloat16),
        ("torch", "DoubleStorage") => storage(Kind::Double),
        ("torch", "LongStorage") => storage(Kind::Int64),
        ("torch", "IntStorage") => storage(Kind::Int),
        ("torch", "ShortStorage") => storage(Kind::Int16),
        ("torch", "CharStorage") => storage(Kind::Int8),
        ("torch", "ByteStorage") => storage(Kind::Uint8),
        ("torch", "BoolStorage") => storage(Kind::Bool),
        _ => None,
    }
}

/// Reads the storage `key` of kind `kind` with `numel` elements from the archive.
type StorageReader<'a> = dyn FnMut(&str, Kind, i64) -> Result<Tensor> + 'a;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
    storages: HashMap<String, Tensor>,
    read_storage: &'a mut StorageReader<'a>,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.context("the pickle ends in the middle of an opcode")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .context("unterminated text line")?;
        let s = String::from_utf8(rest[..n].to_vec()).context("text line is not UTF-8")?;
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> Result<String> {
        String::from_utf8(self.take(n)?.to_vec()).context("string is not UTF-8")
    }

    fn pop(&mut self) -> Result<Value> {
        self.stack.pop().context("pickle stack underflow")
    }

    /// Everything above the topmost mark (the mark removed).
    fn pop_mark(&mut self) -> Result<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .context("no mark on the pickle stack")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }

    fn top(&mut self) -> Result<&mut Value> {
        self.stack.last_mut().context("pickle stack underflow")
    }

    fn memo_put(&mut self, idx: u32) -> Result<()> {
        let v = self.top()?.shallow()?;
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<()> {
        let v = self
            .memo
            .get(&idx)
            .with_context(|| format!("memo entry {idx} is missing"))?
            .shallow()?;
        self.stack.push(v);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        match allowed_global(module, name) {
            Some(g) => {
                self.stack.push(Value::Global(g));
                Ok(())
            }
            None => bail!(
                "refuses the global `{module}.{name}`: only tensors and plain containers are read (a pickle that names other globals may run code)"
            ),
        }
    }

    /// `('storage', storage_type, key, location, numel)`: the storage, read once per key.
    fn persistent_load(&mut self, pid: Value) -> Result<Value> {
        let Value::Tuple(t) = pid else {
            bail!("unsupported persistent id {pid:?}")
        };
        match t.as_slice() {
            [Value::Str(tag), Value::Global(Global::StorageType(kind)), Value::Str(key), _location, numel]
                if tag == "storage" =>
            {
                if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bail!("storage key {key:?} is not a plain name");
                }
                let numel = numel.as_int("storage size")?;
                if let Some(s) = self.storages.get(key) {
                    return Ok(Value::Storage(s.shallow_clone()));
                }
                let s = (self.read_storage)(key, *kind, numel)?;
                self.storages.insert(key.clone(), s.shallow_clone());
                Ok(Value::Storage(s))
            }
            _ => bail!("unsupported persistent id {t:?}"),
        }
    }

    /// Applies an allowed callable to its argument tuple.
    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let Value::Global(g) = callable else {
            bail!("cannot call {callable:?}")
        };
        let Value::Tuple(mut args) = args else {
            bail!("call arguments are not a tuple")
        };
        match g {
            Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Vec::new())),
            Global::RebuildTensorV2 if args.len() >= 4 => {
                let stride = args[3].as_ints("tensor stride")?;
                let size = args[2].as_ints("tensor size")?;
                let offset = args[1].as_int("storage offset")?;
                let Value::Storage(storage) = std::mem::replace(&mut args[0], Value::None) else {
                    bail!("a tensor is rebuilt from something that is not a storage")
                };
                Ok(Value::Tensor(view(&storage, offset, &size, &stride)?))
            }
            Global::RebuildParameter if !args.is_empty() => match args.swap_remove(0) {
                Value::Tensor(t) => Ok(Value::Tensor(t)),
                other => bail!("a parameter is rebuilt from {other:?}"),
            },
            _ => bail!("unsupported call of {g:?} with {} arguments", args.len()),
        }
    }

    fn run(&mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => drop(self.u8()?),             // PROTO
                0x95 => drop(self.u64()?),            // FRAME
                b'.' => return self.pop(),            // STOP
                b'(' => self.stack.push(Value::Mark), // MARK
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'J' => {
                    let v = i32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
                    self.stack.push(Value::Int(v as i64))
                }
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes.
                    let n = self.u8()? as usize;
                    if n > 8 {
                        bail!("integer of {n} bytes is too large");
                    }
                    let bytes = self.take(n)?;
                    let mut v: i64 = 0;
                    for (i, b) in bytes.iter().enumerate() {
                        v |= (*b as i64) << (8 * i);
                    }
                    if n > 0 && n < 8 && bytes[n - 1] & 0x80 != 0 {
                        v -= 1i64 << (8 * n);
                    }
                    self.stack.push(Value::Int(v))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes"));
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s))
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s))
                }
                0x8d => {
                    let n = usize::try_from(self.u64()?).context("string too long")?;
                    let s = self.string(n)?;
                    self.stack.push(Value::Str(s))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        bail!("pickle stack underflow");
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::List(items))
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    let dict = pairs(items)?;
                    self.stack.push(Value::Dict(dict))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top()? {
                        Value::List(l) => l.push(v),
                        _ => bail!("APPEND to something that is not a list"),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top()? {
                        Value::List(l) => l.extend(items),
                        _ => bail!("APPENDS to something that is not a list"),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => bail!("SETITEM on something that is not a dict"),
                    }
                }
                b'u' => {
                    let items = pairs(self.pop_mark()?)?;
                    match self.top()? {
                        Value::Dict(d) => d.extend(items),
                        _ => bail!("SETITEMS on something that is not a dict"),
                    }
                }
                b'q' => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                b'r' => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                0x94 => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                b'h' => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                b'j' => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.global(&m, &n)?,
                        _ => bail!("STACK_GLOBAL with names that are not strings"),
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.stack.push(v)
                }
                b'R' => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.stack.push(v)
                }
                b'b' => {
                    // BUILD: a state dict (an OrderedDict) carries its `_metadata` (module
                    // versions) as instance attributes; they are not weights and are dropped.
                    let state = self.pop()?;
                    match (self.top()?, state) {
                        (_, Value::None) | (Value::Dict(_), Value::Dict(_)) => {}
                        (_, s) => bail!("unsupported object state {s:?}"),
                    }
                }
                other => bail!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    self.pos - 1
                ),
            }
        }
    }
}

fn pairs(items: Vec<Value>) -> Result<Vec<(Value, Value)>> {
    if !items.len().is_multiple_of(2) {
        bail!("odd number of dict items");
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Ok(out)
}

/// A copy of the view `(offset, size, stride)` of `storage`, once it is shown to stay inside it.
fn view(storage: &Tensor, offset: i64, size: &[i64], stride: &[i64]) -> Result<Tensor> {
    if size.len() != stride.len()
        || size.iter().any(|&s| s < 0)
        || stride.iter().any(|&s| s < 0)
        || offset < 0
    {
        bail!("tensor with size {size:?}, stride {stride:?}, offset {offset} is malformed");
    }
    let numel = storage.numel() as i64;
    if size.contains(&0) {
        return Ok(Tensor::zeros(size, (storage.kind(), tch::Device::Cpu)));
    }
    let last = size.iter().zip(stride).try_fold(offset, |acc, (&n, &s)| {
        (n - 1).checked_mul(s).and_then(|d| acc.checked_add(d))
    });
    match last {
        Some(last) if last < numel => Ok(storage.as_strided(size, stride, offset).contiguous()),
        _ => bail!("tensor with size {size:?}, stride {stride:?}, offset {offset} reaches past its storage of {numel} elements"),
    }
}

/// The object saved by `torch.save` in `path` (tensors on the CPU in their saved dtypes).
pub fn load_torch_zip(path: &Path) -> Result<Value> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a zip archive", path.display()))?;
    let pkl_name = zip
        .file_names()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl")
        .map(String::from)
        .with_context(|| format!("{} has no data.pkl: not a torch.save file", path.display()))?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_string();
    let mut pickle = Vec::new();
    zip.by_name(&pkl_name)?.read_to_end(&mut pickle)?;
    let mut read_storage = |key: &str, kind: Kind, numel: i64| -> Result<Tensor> {
        let name = format!("{prefix}data/{key}");
        let mut entry = zip
            .by_name(&name)
            .with_context(|| format!("storage {name} is missing"))?;
        let bytes = usize::try_from(numel)
            .ok()
            .and_then(|n| n.checked_mul(kind.elt_size_in_bytes()));
        if bytes != Some(entry.size() as usize) {
            bail!(
                "storage {name} holds {} bytes, not {numel} elements of {kind:?}",
                entry.size()
            );
        }
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut buf)?;
        Ok(Tensor::from_data_size(&buf, &[numel], kind))
    };
    let mut m = Machine {
        data: &pickle,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
        storages: HashMap::new(),
        read_storage: &mut read_storage,
    };
    m.run()
        .with_context(|| format!("{}: {pkl_name}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes a pickle by hand into a torch.save-shaped zip.
    fn zip_with(dir: &Path, pickle: &[u8]) -> std::path::PathBuf {
        use std::io::Write;
        let p = dir.join("hand.pth");
        let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
        let opts =
            zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
        z.start_file("archive/data.pkl", opts).unwrap();
        z.write_all(pickle).unwrap();
        z.start_file("archive/data/0", opts).unwrap();
        z.write_all(&[0u8; 8]).unwrap();
        z.finish().unwrap();
        p
    }

    #[test]
    fn hand_written_pickles() {
        let dir = tempfile::tempdir().unwrap();
        // {'n': -2, 'x': 1.5, 'l': [True, None]} with protocol 2 opcodes.
        let mut p = vec![0x80, 2, b'}', b'q', 0, b'('];
        p.extend(b"X\x01\x00\x00\x00nJ\xfe\xff\xff\xff");
        p.extend(b"X\x01\x00\x00\x00xG");
        p.extend(1.5f64.to_be_bytes());
        p.extend(b"X\x01\x00\x00\x00l]q\x01(\x88Neu.");
        let v = load_torch_zip(&zip_with(dir.path(), &p)).unwrap();
        assert!(matches!(v.get("n"), Some(Value::Int(-2))));
        assert!(matches!(v.get("x"), Some(Value::Float(f)) if *f == 1.5));
        assert!(
            matches!(v.get("l"), Some(Value::List(l)) if matches!(l[..], [Value::Bool(true), Value::None]))
        );
        // A tensor whose view reaches past its 2-element float storage is refused.
        let mut p = vec![0x80, 2];
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQK\x00K\x03\x85K\x01\x85\x89)tR.");
        let e = format!(
            "{:#}",
            load_torch_zip(&zip_with(dir.path(), &p)).unwrap_err()
        );
        assert!(e.contains("reaches past its storage of 2 elements"), "{e}");
        // Any other global is refused by name.
        let e = format!(
            "{:#}",
            load_torch_zip(&zip_with(dir.path(), b"\x80\x02cbuiltins\neval\n.")).unwrap_err()
        );
        assert!(e.contains("refuses the global `builtins.eval`"), "{e}");
    }
}
