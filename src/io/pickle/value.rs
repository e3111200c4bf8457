//! What the reader returns: the saved object as a tree of [`Value`]s.
use tch::Tensor;

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
