//! The values of a pickle while it runs ([`Obj`]: containers shared by reference, the accepted
//! globals), and how they become the result's [`Value`]s, bounded in depth and cost.
use super::budget::Budget;
use super::value::Value;
use anyhow::{bail, Result};
use std::cell::RefCell;
use std::rc::Rc;
use tch::{Kind, Tensor};

/// How deep values may nest (a checkpoint nests about 5 levels, a CLIP module tree about 8).
pub const MAX_DEPTH: usize = 100;
/// What one value of the result is charged, beside the bytes of its strings.
const VALUE_COST: u64 = 32;

/// The globals the reader accepts.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    StorageType(Kind),
    /// A TorchScript class (`__torch__.…`), in an archive with code only.
    Class(Rc<str>),
}

/// The global `module.name`, if the reader accepts it.
pub(super) fn allowed_global(module: &str, name: &str, torchscript: bool) -> Option<Global> {
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

/// What a container of the pickle is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Shape {
    List,
    Tuple,
    /// Keys and values alternate in `items`.
    Dict,
    /// An object of a TorchScript class; `items` holds its state once built.
    Object,
}

/// A container while the pickle runs: shared by reference (as Python shares it), never copied.
pub(super) struct Node {
    pub(super) shape: Shape,
    pub(super) class: Option<Rc<str>>,
    pub(super) items: Vec<Obj>,
}

/// A value while the pickle runs. Clones are cheap: they share containers, strings and tensors.
#[derive(Clone)]
pub(super) enum Obj {
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
    pub(super) fn kind_name(&self) -> String {
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

    pub(super) fn as_int(&self, what: &str) -> Result<i64> {
        match self {
            Obj::Int(i) => Ok(*i),
            Obj::Bool(b) => Ok(*b as i64),
            other => bail!("{what}: expected an integer, found {}", other.kind_name()),
        }
    }

    /// The items of a tuple or list.
    pub(super) fn seq(&self, what: &str) -> Result<Vec<Obj>> {
        match self {
            Obj::Node(n) if matches!(n.borrow().shape, Shape::Tuple | Shape::List) => {
                Ok(n.borrow().items.clone())
            }
            other => bail!("{what}: expected a tuple, found {}", other.kind_name()),
        }
    }

    pub(super) fn as_ints(&self, what: &str) -> Result<Vec<i64>> {
        self.seq(what)?.iter().map(|x| x.as_int(what)).collect()
    }
}

/// `obj` as a [`Value`] tree: `depth` levels deep at most, each value charged to `budget` (a
/// value the memo shares is charged wherever it appears, so sharing cannot multiply memory
/// unseen).
pub(super) fn own(obj: &Obj, depth: usize, budget: &mut Budget) -> Result<Value> {
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
