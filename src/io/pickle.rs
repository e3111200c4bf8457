//! A restricted reader for PyTorch's zip archives: `torch.save` files (the `best.pth` of IRRA and
//! CCMA) and TorchScript archives (OpenAI's `ViT-B-16.pt`). It rebuilds tensors, plain containers
//! and TorchScript module objects as attribute containers, and nothing else; no code in a file is
//! ever run.
//!
//! The pickle in `<archive>/data.pkl` is interpreted opcode by opcode. Only the globals that
//! describe tensors and containers are accepted (`collections.OrderedDict`,
//! `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the `torch.*Storage`
//! types); any other global (`os.system`, a model class, ...) is refused by name, as
//! `torch.load(weights_only=True)` does. In a TorchScript archive (one with `code/` or
//! `constants.pkl`) the module tree is pickled as objects of classes named `__torch__.…`: those
//! objects are read as their attribute dicts; one whose state is anything but a dict (a class with
//! its own `__setstate__`) is refused, and the archive's `code/` and `constants.pkl` are never read.
//!
//! The file bounds everything: values nest at most [`MAX_DEPTH`] levels; memo references share
//! the value they name instead of copying it; every byte decompressed from the zip, every tensor
//! made and every value of the result is charged to one budget of [`BUDGET_PER_BYTE`] times the
//! file's size (plus [`BUDGET_BASE`]), checked before anything is allocated; each storage must
//! hold exactly its element count times its element size, and each tensor view (offset, sizes,
//! strides) must stay inside its storage, with overflow-checked arithmetic.
use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// How deep values may nest (a checkpoint nests about 5 levels, a CLIP module tree about 8).
pub const MAX_DEPTH: usize = 100;
/// Bytes of decompressed entries, tensors and values a file may cost, per byte of the file...
pub const BUDGET_PER_BYTE: u64 = 4;
/// ...plus this much.
pub const BUDGET_BASE: u64 = 16 << 20;
/// Dimensions a tensor may have.
const MAX_DIMS: usize = 32;
/// What one value of the result is charged, beside the bytes of its strings.
const VALUE_COST: u64 = 32;

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
    /// An object of a TorchScript class (a module of an archive's tree): the class's qualified
    /// name (`__torch__.torch.nn.modules.linear.Linear`) and its attributes in order.
    Object {
        class: String,
        attributes: Vec<(String, Value)>,
    },
}

impl Value {
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

    /// What kind of value this is, for messages (never the value itself, which may be huge).
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "a list",
            Value::Tuple(_) => "a tuple",
            Value::Dict(_) => "a dict",
            Value::Tensor(_) => "a tensor",
            Value::Object { .. } => "an object",
        }
    }
}

/// The globals the reader accepts.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(Kind),
    /// A TorchScript class (`__torch__.…`), in an archive with code only.
    Class(Rc<str>),
}

/// The global `module.name`, if the reader accepts it.
fn allowed_global(module: &str, name: &str, torchscript: bool) -> Option<Global> {
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
        (m, n) if torchscript && (m == "__torch__" || m.starts_with("__torch__.")) => {
            Some(Global::Class(format!("{m}.{n}").into()))
        }
        _ => None,
    }
}

/// What a file may still cost (bytes): decompressed entries, tensors, values of the result.
struct Budget {
    left: u64,
    total: u64,
}

impl Budget {
    fn for_file(len: u64) -> Budget {
        let total = len
            .saturating_mul(BUDGET_PER_BYTE)
            .saturating_add(BUDGET_BASE);
        Budget { left: total, total }
    }

    /// Takes `bytes` from the budget, or fails naming `what` before anything is allocated.
    fn charge(&mut self, bytes: u64, what: &dyn Fn() -> String) -> Result<()> {
        match self.left.checked_sub(bytes) {
            Some(left) => {
                self.left = left;
                Ok(())
            }
            None => bail!(
                "{} would take {bytes} bytes, past what this file may cost ({} bytes: {BUDGET_PER_BYTE} x its size + {} MiB)",
                what(),
                self.total,
                BUDGET_BASE >> 20
            ),
        }
    }
}

/// What a container of the pickle is.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    List,
    Tuple,
    /// Keys and values alternate in `items`.
    Dict,
    /// An object of a TorchScript class; `items` holds its state once built.
    Object,
}

/// A container while the pickle runs: shared by reference (as Python shares it), never copied.
struct Node {
    shape: Shape,
    class: Option<Rc<str>>,
    items: Vec<Obj>,
}

/// A value while the pickle runs. Clones are cheap: they share containers, strings and tensors.
#[derive(Clone)]
enum Obj {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Node(Rc<RefCell<Node>>),
    Tensor(Rc<Tensor>),
    Storage(Rc<Tensor>),
    Global(Global),
}

impl Obj {
    fn kind_name(&self) -> String {
        match self {
            Obj::None => "None".into(),
            Obj::Bool(_) => "a boolean".into(),
            Obj::Int(_) => "an integer".into(),
            Obj::Float(_) => "a float".into(),
            Obj::Str(_) => "a string".into(),
            Obj::Bytes(_) => "bytes".into(),
            Obj::Node(n) => match n.borrow().shape {
                Shape::List => "a list".into(),
                Shape::Tuple => "a tuple".into(),
                Shape::Dict => "a dict".into(),
                Shape::Object => "an object".into(),
            },
            Obj::Tensor(_) => "a tensor".into(),
            Obj::Storage(_) => "a storage".into(),
            Obj::Global(g) => format!("the global {g:?}"),
        }
    }

    fn as_int(&self, what: &str) -> Result<i64> {
        match self {
            Obj::Int(i) => Ok(*i),
            Obj::Bool(b) => Ok(*b as i64),
            other => bail!("{what}: expected an integer, found {}", other.kind_name()),
        }
    }

    /// The items of a tuple or list.
    fn seq(&self, what: &str) -> Result<Vec<Obj>> {
        match self {
            Obj::Node(n) if matches!(n.borrow().shape, Shape::Tuple | Shape::List) => {
                Ok(n.borrow().items.clone())
            }
            other => bail!("{what}: expected a tuple, found {}", other.kind_name()),
        }
    }

    fn as_ints(&self, what: &str) -> Result<Vec<i64>> {
        self.seq(what)?.iter().map(|x| x.as_int(what)).collect()
    }
}

/// Reads the storage `key` of kind `kind` with `numel` elements from the archive.
type StorageReader<'a> = dyn FnMut(&str, Kind, i64, &mut Budget) -> Result<Tensor> + 'a;

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Obj>,
    /// Positions in `stack` of the open marks.
    marks: Vec<usize>,
    memo: HashMap<u32, Obj>,
    /// Every container made, so that dropping the machine never recurses (deep nesting) and
    /// never leaks (a container made to hold itself).
    nodes: Vec<Rc<RefCell<Node>>>,
    storages: HashMap<String, Rc<Tensor>>,
    torchscript: bool,
    budget: &'a mut Budget,
    read_storage: &'a mut StorageReader<'a>,
}

impl Drop for Machine<'_> {
    fn drop(&mut self) {
        for n in &self.nodes {
            n.borrow_mut().items.clear();
        }
    }
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.context("the pickle ends in the middle of an opcode")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
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

    fn string(&mut self, n: u64) -> Result<Obj> {
        let n = usize::try_from(n).context("string too long")?;
        let s = std::str::from_utf8(self.take(n)?).context("string is not UTF-8")?;
        Ok(Obj::Str(s.into()))
    }

    fn bytes(&mut self, n: usize) -> Result<Obj> {
        Ok(Obj::Bytes(self.take(n)?.into()))
    }

    fn push(&mut self, v: Obj) {
        self.stack.push(v)
    }

    fn node(&mut self, shape: Shape, class: Option<Rc<str>>, items: Vec<Obj>) -> Obj {
        let n = Rc::new(RefCell::new(Node {
            shape,
            class,
            items,
        }));
        self.nodes.push(n.clone());
        Obj::Node(n)
    }

    /// The top of the stack, which must lie above the innermost open mark.
    fn pop(&mut self) -> Result<Obj> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            bail!("pickle stack underflow");
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    /// Everything above the innermost mark (the mark closed).
    fn pop_mark(&mut self) -> Result<Vec<Obj>> {
        let at = self.marks.pop().context("no mark on the pickle stack")?;
        Ok(self.stack.split_off(at))
    }

    /// The container on top of the stack, which must have `shape`.
    fn top_node(&self, shape: Shape, op: &str) -> Result<Rc<RefCell<Node>>> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(Obj::Node(n)) if self.stack.len() > floor && n.borrow().shape == shape => {
                Ok(n.clone())
            }
            Some(other) => bail!("{op} on {}", other.kind_name()),
            None => bail!("pickle stack underflow"),
        }
    }

    fn memo_put(&mut self, idx: u32) -> Result<()> {
        let v = self.stack.last().context("pickle stack underflow")?.clone();
        self.memo.insert(idx, v);
        Ok(())
    }

    fn memo_get(&mut self, idx: u32) -> Result<()> {
        let v = self
            .memo
            .get(&idx)
            .with_context(|| format!("memo entry {idx} is missing"))?
            .clone();
        self.push(v);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<()> {
        match allowed_global(module, name, self.torchscript) {
            Some(g) => {
                self.push(Obj::Global(g));
                Ok(())
            }
            None => bail!(
                "refuses the global `{module}.{name}`: only tensors and plain containers are read (a pickle that names other globals may run code)"
            ),
        }
    }

    /// `('storage', storage_type, key, location, numel)`: the storage, read once per key.
    fn persistent_load(&mut self, pid: Obj) -> Result<Obj> {
        let t = pid.seq("persistent id")?;
        match t.as_slice() {
            [Obj::Str(tag), Obj::Global(Global::StorageType(kind)), Obj::Str(key), _location, numel]
                if &**tag == "storage" =>
            {
                if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bail!("storage key {key:?} is not a plain name");
                }
                let numel = numel.as_int("storage size")?;
                if let Some(s) = self.storages.get(&**key) {
                    if s.kind() != *kind || s.numel() as i64 != numel {
                        bail!("storage {key} is named twice with different types or sizes");
                    }
                    return Ok(Obj::Storage(s.clone()));
                }
                let s = Rc::new((self.read_storage)(key, *kind, numel, self.budget)?);
                self.storages.insert(key.to_string(), s.clone());
                Ok(Obj::Storage(s))
            }
            _ => bail!("unsupported persistent id (expected a storage reference)"),
        }
    }

    /// Applies an allowed callable to its argument tuple.
    fn reduce(&mut self, callable: Obj, args: Obj) -> Result<Obj> {
        let Obj::Global(g) = callable else {
            bail!("cannot call {}", callable.kind_name())
        };
        let args = args.seq("call arguments")?;
        match (&g, args.as_slice()) {
            (Global::OrderedDict, []) => Ok(self.node(Shape::Dict, None, Vec::new())),
            (Global::RebuildTensorV2, [storage, offset, size, stride, ..]) => {
                let stride = stride.as_ints("tensor stride")?;
                let size = size.as_ints("tensor size")?;
                let offset = offset.as_int("storage offset")?;
                let Obj::Storage(storage) = storage else {
                    bail!("a tensor is rebuilt from something that is not a storage")
                };
                let t = view(storage, offset, &size, &stride, self.budget)?;
                Ok(Obj::Tensor(Rc::new(t)))
            }
            (Global::RebuildParameter, [Obj::Tensor(t), ..]) => Ok(Obj::Tensor(t.clone())),
            _ => bail!("unsupported call of {g:?} with {} arguments", args.len()),
        }
    }

    /// NEWOBJ: an empty object of a TorchScript class, its state set by BUILD.
    fn new_object(&mut self, class: Obj, args: Obj) -> Result<Obj> {
        match (class, args.seq("constructor arguments")?.is_empty()) {
            (Obj::Global(Global::Class(name)), true) => {
                Ok(self.node(Shape::Object, Some(name), Vec::new()))
            }
            (other, _) => bail!("cannot construct {}", other.kind_name()),
        }
    }

    /// BUILD: an object's attribute dict; a state dict's (an OrderedDict's) own attributes
    /// (`_metadata`, module versions) are not weights and are dropped.
    fn build(&mut self, state: Obj) -> Result<()> {
        let top = match self.stack.last() {
            Some(Obj::Node(n)) => n.clone(),
            _ => bail!("BUILD on something that is not an object"),
        };
        let is_dict = |o: &Obj| matches!(o, Obj::Node(n) if n.borrow().shape == Shape::Dict);
        let (shape, class, built) = {
            let t = top.borrow();
            (t.shape, t.class.clone(), !t.items.is_empty())
        };
        match shape {
            Shape::Dict if is_dict(&state) || matches!(state, Obj::None) => Ok(()),
            Shape::Object if is_dict(&state) && !built => {
                top.borrow_mut().items.push(state);
                Ok(())
            }
            Shape::Object => bail!(
                "object of class `{}` has a state that is not a plain attribute dict ({}): restoring it would run the class's own code, which is never run",
                class.as_deref().unwrap_or("?"),
                state.kind_name()
            ),
            _ => bail!("unsupported object state {}", state.kind_name()),
        }
    }

    fn run(&mut self) -> Result<Obj> {
        loop {
            let code = self.u8()?;
            match code {
                op::PROTO => drop(self.u8()?),
                op::FRAME => drop(self.u64()?),
                op::STOP => return self.pop(),
                op::MARK => self.marks.push(self.stack.len()),
                op::EMPTY_DICT => {
                    let d = self.node(Shape::Dict, None, Vec::new());
                    self.push(d)
                }
                op::EMPTY_LIST => {
                    let l = self.node(Shape::List, None, Vec::new());
                    self.push(l)
                }
                op::EMPTY_TUPLE => {
                    let t = self.node(Shape::Tuple, None, Vec::new());
                    self.push(t)
                }
                op::NONE => self.push(Obj::None),
                op::NEWTRUE => self.push(Obj::Bool(true)),
                op::NEWFALSE => self.push(Obj::Bool(false)),
                op::BININT => {
                    let v = i32::from_le_bytes(self.array()?);
                    self.push(Obj::Int(v as i64))
                }
                op::BININT1 => {
                    let v = self.u8()?;
                    self.push(Obj::Int(v as i64))
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(self.array()?);
                    self.push(Obj::Int(v as i64))
                }
                op::LONG1 => {
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
                    self.push(Obj::Int(v))
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(self.array()?);
                    self.push(Obj::Float(v))
                }
                op::BINUNICODE => {
                    let n = self.u32()? as u64;
                    let s = self.string(n)?;
                    self.push(s)
                }
                op::SHORT_BINUNICODE => {
                    let n = self.u8()? as u64;
                    let s = self.string(n)?;
                    self.push(s)
                }
                op::BINUNICODE8 => {
                    let n = self.u64()?;
                    let s = self.string(n)?;
                    self.push(s)
                }
                op::SHORT_BINBYTES => {
                    let n = self.u8()? as usize;
                    let b = self.bytes(n)?;
                    self.push(b)
                }
                op::BINBYTES => {
                    let n = self.u32()? as usize;
                    let b = self.bytes(n)?;
                    self.push(b)
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    let t = self.node(Shape::Tuple, None, items);
                    self.push(t)
                }
                op::TUPLE1..=op::TUPLE3 => {
                    let n = (code - op::TUPLE1 + 1) as usize;
                    let mut items = (0..n).map(|_| self.pop()).collect::<Result<Vec<_>>>()?;
                    items.reverse();
                    let t = self.node(Shape::Tuple, None, items);
                    self.push(t)
                }
                op::LIST => {
                    let items = self.pop_mark()?;
                    let l = self.node(Shape::List, None, items);
                    self.push(l)
                }
                op::DICT => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        bail!("odd number of dict items");
                    }
                    let d = self.node(Shape::Dict, None, items);
                    self.push(d)
                }
                op::APPEND => {
                    let v = self.pop()?;
                    self.top_node(Shape::List, "APPEND")?
                        .borrow_mut()
                        .items
                        .push(v)
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let list = self.top_node(Shape::List, "APPENDS")?;
                    list.borrow_mut().items.extend(items);
                }
                op::SETITEM => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    let dict = self.top_node(Shape::Dict, "SETITEM")?;
                    dict.borrow_mut().items.extend([k, v]);
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    if !items.len().is_multiple_of(2) {
                        bail!("odd number of dict items");
                    }
                    let dict = self.top_node(Shape::Dict, "SETITEMS")?;
                    dict.borrow_mut().items.extend(items);
                }
                op::BINPUT => {
                    let i = self.u8()? as u32;
                    self.memo_put(i)?
                }
                op::LONG_BINPUT => {
                    let i = self.u32()?;
                    self.memo_put(i)?
                }
                op::MEMOIZE => {
                    let i = self.memo.len() as u32;
                    self.memo_put(i)?
                }
                op::BINGET => {
                    let i = self.u8()? as u32;
                    self.memo_get(i)?
                }
                op::LONG_BINGET => {
                    let i = self.u32()?;
                    self.memo_get(i)?
                }
                op::GLOBAL => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.global(&module, &name)?
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Obj::Str(m), Obj::Str(n)) => self.global(&m, &n)?,
                        _ => bail!("STACK_GLOBAL with names that are not strings"),
                    }
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(pid)?;
                    self.push(v)
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)
                }
                op::NEWOBJ => {
                    let args = self.pop()?;
                    let class = self.pop()?;
                    let v = self.new_object(class, args)?;
                    self.push(v)
                }
                op::BUILD => {
                    let state = self.pop()?;
                    self.build(state)?
                }
                other => bail!(
                    "unsupported pickle opcode 0x{other:02x} at byte {}",
                    self.pos - 1
                ),
            }
        }
    }
}

/// The opcodes read, named as Python's `pickle.py` names them (TUPLE2, 0x86, lies between TUPLE1
/// and TUPLE3).
mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const MARK: u8 = b'(';
    pub const EMPTY_DICT: u8 = b'}';
    pub const EMPTY_LIST: u8 = b']';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const BINUNICODE: u8 = b'X';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const TUPLE: u8 = b't';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE3: u8 = 0x87;
    pub const LIST: u8 = b'l';
    pub const DICT: u8 = b'd';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const GLOBAL: u8 = b'c';
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const BINPERSID: u8 = b'Q';
    pub const REDUCE: u8 = b'R';
    pub const NEWOBJ: u8 = 0x81;
    pub const BUILD: u8 = b'b';
}

/// `obj` as a [`Value`] tree: `depth` levels deep at most, each value charged to `budget` (a
/// value the memo shares is charged wherever it appears, so sharing cannot multiply memory
/// unseen).
fn own(obj: &Obj, depth: usize, budget: &mut Budget) -> Result<Value> {
    if depth > MAX_DEPTH {
        bail!("values nest deeper than {MAX_DEPTH} levels");
    }
    let extra = match obj {
        Obj::Str(s) => s.len() as u64,
        Obj::Bytes(b) => b.len() as u64,
        _ => 0,
    };
    budget.charge(VALUE_COST + extra, &|| "the pickle's values".to_string())?;
    Ok(match obj {
        Obj::None => Value::None,
        Obj::Bool(b) => Value::Bool(*b),
        Obj::Int(i) => Value::Int(*i),
        Obj::Float(f) => Value::Float(*f),
        Obj::Str(s) => Value::Str(s.to_string()),
        Obj::Bytes(b) => Value::Bytes(b.to_vec()),
        Obj::Tensor(t) => Value::Tensor(t.shallow_clone()),
        Obj::Storage(_) | Obj::Global(_) => {
            bail!("the pickle holds {} outside a tensor", obj.kind_name())
        }
        Obj::Node(n) => {
            let n = n.borrow();
            let items = n
                .items
                .iter()
                .map(|x| own(x, depth + 1, budget))
                .collect::<Result<Vec<_>>>()?;
            match n.shape {
                Shape::List => Value::List(items),
                Shape::Tuple => Value::Tuple(items),
                Shape::Dict => Value::Dict(pairs(items)),
                Shape::Object => {
                    let class = n.class.as_deref().unwrap_or_default().to_string();
                    let attributes = match items.into_iter().next() {
                        Some(Value::Dict(d)) => d
                            .into_iter()
                            .map(|(k, v)| match k {
                                Value::Str(k) => Ok((k, v)),
                                other => bail!(
                                    "object of class `{class}` has an attribute named by {}",
                                    other.kind_name()
                                ),
                            })
                            .collect::<Result<_>>()?,
                        _ => bail!("object of class `{class}` was never given its state"),
                    };
                    Value::Object { class, attributes }
                }
            }
        }
    })
}

fn pairs(items: Vec<Value>) -> Vec<(Value, Value)> {
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    out
}

/// A copy of the view `(offset, size, stride)` of `storage`, once its element count is within
/// `budget` and its extent within the storage.
fn view(
    storage: &Tensor,
    offset: i64,
    size: &[i64],
    stride: &[i64],
    budget: &mut Budget,
) -> Result<Tensor> {
    let describe = || format!("tensor with size {size:?}, stride {stride:?}, offset {offset}");
    if size.len() != stride.len()
        || size.len() > MAX_DIMS
        || size.iter().any(|&s| s < 0)
        || stride.iter().any(|&s| s < 0)
        || offset < 0
    {
        bail!("{} is malformed", describe());
    }
    let kind = storage.kind();
    let bytes = size
        .iter()
        .try_fold(1u64, |acc, &n| acc.checked_mul(n as u64))
        .and_then(|n| n.checked_mul(kind.elt_size_in_bytes() as u64))
        .with_context(|| format!("{} has too many elements", describe()))?;
    budget.charge(bytes, &describe)?;
    let numel = storage.numel() as i64;
    if bytes == 0 {
        return Ok(Tensor::f_zeros(size, (kind, tch::Device::Cpu))?);
    }
    let last = size.iter().zip(stride).try_fold(offset, |acc, (&n, &s)| {
        (n - 1).checked_mul(s).and_then(|d| acc.checked_add(d))
    });
    match last {
        Some(last) if last < numel => Ok(storage
            .f_as_strided(size, stride, Some(offset))?
            .f_contiguous()?),
        _ => bail!(
            "{} reaches past its storage of {numel} elements",
            describe()
        ),
    }
}

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
    let mut m = Machine {
        data: &pickle,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
        storages: HashMap::new(),
        torchscript,
        budget: &mut budget,
        read_storage: &mut read_storage,
    };
    let result = m.run();
    let value = result.and_then(|top| own(&top, 0, m.budget));
    drop(m);
    value.with_context(|| format!("{}: {pkl_name}", path.display()))
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

    fn err(dir: &Path, pickle: &[u8]) -> String {
        format!("{:#}", load_torch_zip(&zip_with(dir, pickle)).unwrap_err())
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
        let e = err(dir.path(), &p);
        assert!(e.contains("reaches past its storage of 2 elements"), "{e}");
        // Any other global is refused by name; TorchScript classes outside an archive with code.
        let e = err(dir.path(), b"\x80\x02cbuiltins\neval\n.");
        assert!(e.contains("refuses the global `builtins.eval`"), "{e}");
        let e = err(dir.path(), b"\x80\x02c__torch__\nM\n).}b.");
        assert!(e.contains("refuses the global `__torch__.M`"), "{e}");
    }

    /// A memo reference shares its value: a list that holds itself is refused by depth, and
    /// a list of lists, each holding the one before twice, by the budget, not by memory.
    #[test]
    fn shared_values_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let e = err(dir.path(), b"\x80\x02]q\x00h\x00a.");
        assert!(e.contains("nest deeper than 100 levels"), "{e}");
        let mut p = b"\x80\x02]q\x00".to_vec();
        for i in 0..60u8 {
            p.extend([b'(', b'h', i, b'h', i, b'l', b'q', i + 1]);
        }
        p.push(b'.');
        let e = err(dir.path(), &p);
        assert!(e.contains("past what this file may cost"), "{e}");
        // The mutation of a memoised dict is seen through every reference to it.
        let v = load_torch_zip(&zip_with(
            dir.path(),
            b"\x80\x02]q\x00}q\x01ah\x01X\x01\x00\x00\x00kK\x07s\x86.",
        ))
        .unwrap();
        let Value::Tuple(t) = v else { panic!() };
        assert!(matches!(&t[0], Value::List(l) if matches!(l[0].get("k"), Some(Value::Int(7)))));
        assert!(matches!(t[1].get("k"), Some(Value::Int(7))));
    }
}
