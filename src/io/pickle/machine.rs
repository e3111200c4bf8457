//! The pickle machine: `data.pkl` interpreted opcode by opcode, with only the accepted globals.
use super::budget::Budget;
use super::obj::{allowed_global, own, Global, Node, Obj, Shape};
use super::value::Value;
use super::view::view;
use anyhow::{bail, Context, Result};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// Reads the storage `key` of kind `kind` with `numel` elements from the archive.
pub(super) type StorageReader<'a> = dyn FnMut(&str, Kind, i64, &mut Budget) -> Result<Tensor> + 'a;

/// The object the pickle `data` holds, as a [`Value`] tree (owned within `budget`). In an
/// archive with code (`torchscript`), objects of `__torch__` classes are read as attribute
/// containers; `read_storage` reads each storage the pickle names.
pub(super) fn unpickle<'a>(
    data: &'a [u8],
    torchscript: bool,
    budget: &'a mut Budget,
    read_storage: &'a mut StorageReader<'a>,
) -> Result<Value> {
    let mut m = Machine {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        nodes: Vec::new(),
        storages: HashMap::new(),
        torchscript,
        budget,
        read_storage,
    };
    let result = m.run();
    let value = result.and_then(|top| own(&top, 0, m.budget));
    drop(m);
    value
}

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
