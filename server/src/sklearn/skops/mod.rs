//! skops files (`skops.io.dump`, MLflow 3's default for scikit-learn): a zip holding
//! `schema.json`, a tree of `{__class__, __module__, __loader__, content, ...}` nodes, and one
//! `.npy` file per numeric array.
//!
//! The schema is first audited as a whole: every node's loader and class must be on the same
//! allowlist the pickle reader uses ([`super::globals`]), and functions are always refused, so a
//! hostile name is reported before any array is read. The tree then becomes the same plain
//! [`Pickle`] node arena the pickle reader builds, so every estimator reads it unchanged.

mod archive;
mod npy;

use std::collections::HashMap;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::Limits;
use super::globals::{self, Global};
use super::numpy::{Array, Data, Dtype, Kind};
use super::pickle::{Node, NodeId, Pickle, scalar_node};

pub use archive::MAX_ENTRIES;

/// Why a skops file was refused; each message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum SkopsError {
    #[error("not a readable skops file: {0}")]
    Zip(String),
    #[error("the skops file has {count} entries, more than the limit of {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("refusing skops entry {0:?}: not a plain file name")]
    EntryName(String),
    #[error("skops entry {name} expands to {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { name: String, size: u64, limit: usize },
    #[error("the skops file has no entry {0}")]
    MissingEntry(String),
    #[error("corrupt skops entry {name}: {reason}")]
    Entry { name: String, reason: String },
    #[error("skops schema.json is not valid JSON: {0}")]
    Schema(String),
    #[error("refusing {what} {name}: not a supported scikit-learn class; supported: {supported}")]
    Refused { what: &'static str, name: String, supported: String },
    #[error("unsupported skops node {loader} (for {name})")]
    Loader { loader: String, name: String },
    #[error("invalid skops node {name}: {reason}")]
    Invalid { name: String, reason: String },
    #[error("invalid array {file}: {reason}")]
    Npy { file: String, reason: String },
}

/// Reads a skops file into the node tree scikit-learn estimators are read from.
pub fn read(bytes: &[u8], limits: &Limits) -> Result<Pickle, SkopsError> {
    let entry_max = limits.pickle.max_array_bytes.saturating_add(1 << 16);
    let mut archive = archive::Archive::open(bytes, limits.max_file_bytes, entry_max, MAX_ENTRIES)?;
    let text = archive.read("schema.json")?;
    let schema: J = serde_json::from_slice(&text).map_err(|e| SkopsError::Schema(e.to_string()))?;
    audit(&schema)?;
    let mut b = Builder { archive, nodes: Vec::new(), memo: HashMap::new(), limits, read: text.len() };
    let root = b.node(&schema)?;
    let read = b.read;
    Ok(Pickle::from_nodes(b.nodes, root, read))
}

/// Refuses the first node whose loader or class is not allowed, anywhere in the schema.
fn audit(j: &J) -> Result<(), SkopsError> {
    match j {
        J::Map(items) => {
            if items.iter().any(|(k, _)| k == "__loader__") {
                classify(&Header::of(j)?)?;
            }
            items.iter().try_for_each(|(_, v)| audit(v))
        }
        J::List(items) => items.iter().try_for_each(audit),
        _ => Ok(()),
    }
}

/// What a schema node becomes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shape {
    /// An allowlisted class rebuilt from its `__dict__` (`ObjectNode`).
    Object(&'static str),
    /// An allowlisted class rebuilt from `__reduce__` arguments and a state (trees, losses).
    Reduce(&'static str),
    Dict,
    List,
    Tuple,
    Set,
    Json,
    Array,
    Dtype,
    /// A random generator: estimators never read it.
    Random,
    /// A type (as dict key types and the like hold): kept as None.
    Type,
    Bytes,
    /// A reference to a node read earlier, by `__id__`.
    Cached,
}

/// numpy types an `NdArrayNode` (an array or a numpy scalar) or a `TypeNode` may name.
const NUMPY_TYPES: &[&str] = &[
    "ndarray",
    "float16",
    "float32",
    "float64",
    "longdouble",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "intc",
    "uintc",
    "bool_",
    "bool",
    "str_",
    "bytes_",
];

/// Builtin types a `TypeNode` may name.
const BUILTIN_TYPES: &[&str] =
    &["str", "int", "float", "bool", "list", "tuple", "dict", "set", "frozenset", "NoneType", "bytes", "bytearray"];

/// The identity fields every schema node has.
struct Header<'j> {
    loader: &'j str,
    module: &'j str,
    class: &'j str,
    id: Option<u64>,
    node: &'j J,
}

impl<'j> Header<'j> {
    fn of(j: &'j J) -> Result<Self, SkopsError> {
        let s = |key: &str| match j.get(key) {
            Some(J::Str(s)) => Ok(s.as_str()),
            // CachedNode carries null module and class.
            Some(J::Null) | None if key != "__loader__" => Ok(""),
            _ => Err(SkopsError::Invalid { name: "?".into(), reason: format!("a node needs a string {key}") }),
        };
        let id = match j.get("__id__") {
            Some(J::UInt(n)) => Some(*n),
            Some(J::Int(n)) => Some(*n as u64),
            _ => None,
        };
        Ok(Self { loader: s("__loader__")?, module: s("__module__")?, class: s("__class__")?, id, node: j })
    }

    fn name(&self) -> String {
        format!("{}.{}", self.module, self.class)
    }

    fn invalid(&self, reason: impl Into<String>) -> SkopsError {
        SkopsError::Invalid { name: self.name(), reason: reason.into() }
    }

    fn field(&self, key: &str) -> Result<&'j J, SkopsError> {
        self.node.get(key).ok_or_else(|| self.invalid(format!("missing {key}")))
    }

    fn str_field(&self, key: &str) -> Result<&'j str, SkopsError> {
        match self.field(key)? {
            J::Str(s) => Ok(s),
            _ => Err(self.invalid(format!("{key} must be a string"))),
        }
    }

    fn list_field(&self, key: &str) -> Result<&'j [J], SkopsError> {
        match self.field(key)? {
            J::List(l) => Ok(l),
            _ => Err(self.invalid(format!("{key} must be a list"))),
        }
    }
}

/// The allowlist: what a node with this loader and class may become.
fn classify(h: &Header<'_>) -> Result<Shape, SkopsError> {
    let refused = |what| SkopsError::Refused { what, name: h.name(), supported: globals::supported_list() };
    let class = || match globals::lookup(h.module, h.class) {
        Some(Global::Class(c)) => Ok(c),
        _ => Err(refused("class")),
    };
    let builtin = |names: &[&str], shape| {
        if h.module == "builtins" && names.contains(&h.class) { Ok(shape) } else { Err(refused("class")) }
    };
    match h.loader {
        "ObjectNode" => Ok(Shape::Object(class()?)),
        "TreeNode" | "LossNode" | "SGDNode" => Ok(Shape::Reduce(class()?)),
        "DictNode" => builtin(&["dict"], Shape::Dict),
        "ListNode" => builtin(&["list"], Shape::List),
        "TupleNode" => builtin(&["tuple"], Shape::Tuple),
        "SetNode" => builtin(&["set", "frozenset"], Shape::Set),
        "BytesNode" | "BytearrayNode" => builtin(&["bytes", "bytearray"], Shape::Bytes),
        "JsonNode" => Ok(Shape::Json),
        "CachedNode" => Ok(Shape::Cached),
        "NdArrayNode" if h.module == "numpy" && NUMPY_TYPES.contains(&h.class) => Ok(Shape::Array),
        "DTypeNode" if h.module == "numpy" && h.class == "dtype" => Ok(Shape::Dtype),
        "RandomStateNode" if h.module == "numpy.random.mtrand" && h.class == "RandomState" => Ok(Shape::Random),
        "RandomGeneratorNode" if h.module == "numpy.random._generator" && h.class == "Generator" => Ok(Shape::Random),
        "TypeNode"
            if (h.module == "builtins" && BUILTIN_TYPES.contains(&h.class))
                || (h.module == "numpy" && (NUMPY_TYPES.contains(&h.class) || h.class == "dtype")) =>
        {
            Ok(Shape::Type)
        }
        "NdArrayNode" | "DTypeNode" | "RandomStateNode" | "RandomGeneratorNode" => Err(refused("class")),
        "TypeNode" => Err(refused("type")),
        // Nothing a supported estimator stores is a function; skops would import and return it.
        "FunctionNode" | "MethodNode" | "PartialNode" | "OperatorFuncNode" | "ConstructorFromReduceNode" => {
            Err(refused("function"))
        }
        other => Err(SkopsError::Loader { loader: other.to_string(), name: h.name() }),
    }
}

/// Turns audited schema nodes into arena nodes.
struct Builder<'a, 'l> {
    archive: archive::Archive<'a>,
    nodes: Vec<Node>,
    /// Nodes by their saved `__id__`: skops writes a shared object once per use and loads it once.
    memo: HashMap<u64, NodeId>,
    limits: &'l Limits,
    /// Bytes read so far, for the estimators' read budget.
    read: usize,
}

impl Builder<'_, '_> {
    fn push(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    fn node(&mut self, j: &J) -> Result<NodeId, SkopsError> {
        let h = Header::of(j)?;
        if let Some(id) = h.id.and_then(|id| self.memo.get(&id)) {
            return Ok(*id);
        }
        let shape = classify(&h)?;
        let node = match shape {
            Shape::Cached => return Err(h.invalid("a cached node refers to an unknown object")),
            Shape::Object(class) => {
                let state = match j.get("content") {
                    Some(c) => Some(self.node(c)?),
                    None => None,
                };
                Node::Object { class: Global::Class(class), args: Vec::new(), state }
            }
            Shape::Reduce(class) => {
                let args = h.field("__reduce__")?.get("args").ok_or_else(|| h.invalid("missing __reduce__.args"))?;
                let args = self.node(args)?;
                let Node::Tuple(args) = &self.nodes[args] else {
                    return Err(h.invalid("__reduce__.args must be a tuple"));
                };
                let args = args.clone();
                let state = self.node(h.field("content")?)?;
                Node::Object { class: Global::Class(class), args, state: Some(state) }
            }
            Shape::Dict => self.dict(&h)?,
            Shape::List => Node::List(self.items(h.list_field("content")?)?),
            Shape::Tuple => Node::Tuple(self.items(h.list_field("content")?)?),
            Shape::Set => Node::Set(self.items(h.list_field("content")?)?),
            Shape::Json => json_scalar(h.str_field("content")?).map_err(|e| h.invalid(e))?,
            Shape::Array => self.array(&h)?,
            Shape::Dtype => match self.node(h.field("content")?).map(|c| &self.nodes[c])? {
                Node::Array(a) => Node::Dtype(a.dtype.clone()),
                _ => return Err(h.invalid("a dtype's content must be an array")),
            },
            Shape::Random | Shape::Type => Node::None,
            Shape::Bytes => Node::Bytes(self.entry(h.str_field("file")?)?),
        };
        let id = self.push(node);
        if let Some(saved) = h.id {
            self.memo.insert(saved, id);
        }
        Ok(id)
    }

    fn items(&mut self, items: &[J]) -> Result<Vec<NodeId>, SkopsError> {
        items.iter().map(|i| self.node(i)).collect()
    }

    /// The bytes of an archive entry, counted against the read budget.
    fn entry(&mut self, file: &str) -> Result<Vec<u8>, SkopsError> {
        let b = self.archive.read(file)?;
        self.read = self.read.saturating_add(b.len());
        Ok(b)
    }

    /// A `DictNode`: string keys in the schema, turned back into their saved `key_types`.
    fn dict(&mut self, h: &Header<'_>) -> Result<Node, SkopsError> {
        let J::Map(content) = h.field("content")? else {
            return Err(h.invalid("a dict's content must be an object"));
        };
        let key_types = match h.field("key_types")?.get("content") {
            Some(J::List(types)) => types,
            _ => return Err(h.invalid("key_types must be a list")),
        };
        if key_types.len() != content.len() {
            return Err(h.invalid(format!("{} keys but {} key types", content.len(), key_types.len())));
        }
        let mut pairs = Vec::with_capacity(content.len());
        for ((key, value), ty) in content.iter().zip(key_types) {
            let ty = Header::of(ty)?;
            let bad_key = || h.invalid(format!("key {key:?} is not a valid {}", ty.class));
            let k = match (ty.loader, ty.module, ty.class) {
                ("TypeNode", "builtins", "str") => Node::Str(key.clone()),
                ("TypeNode", "builtins", "int") => Node::Int(key.parse().map_err(|_| bad_key())?),
                ("TypeNode", "builtins", "float") => Node::Float(key.parse().map_err(|_| bad_key())?),
                _ => return Err(h.invalid(format!("unsupported dict key type {}", ty.name()))),
            };
            let k = self.push(k);
            pairs.push((k, self.node(value)?));
        }
        Ok(Node::Dict(pairs))
    }

    /// An `NdArrayNode`: a `.npy` entry, or an object array stored as JSON items.
    fn array(&mut self, h: &Header<'_>) -> Result<Node, SkopsError> {
        match h.str_field("type")? {
            "numpy" => {
                let file = h.str_field("file")?;
                let bytes = self.entry(file)?;
                let a = npy::parse(&bytes, self.limits.pickle.max_array_bytes)
                    .map_err(|reason| SkopsError::Npy { file: file.to_string(), reason })?;
                // A numpy scalar (np.float64 ...) is saved as a 0-d array; pickle gives its value.
                if h.class != "ndarray" && a.shape.is_empty() {
                    let Data::Raw(raw) = &a.data else {
                        return Err(h.invalid("a numpy scalar must hold raw bytes"));
                    };
                    return scalar_node(&a.dtype, raw).ok_or_else(|| h.invalid("unreadable numpy scalar"));
                }
                Ok(Node::Array(a))
            }
            "json" => {
                let items = self.items(h.list_field("content")?)?;
                let shape = self.node(h.field("shape")?)?;
                let Node::Tuple(dims) = &self.nodes[shape] else {
                    return Err(h.invalid("shape must be a tuple"));
                };
                let shape = dims
                    .iter()
                    .map(|&d| match self.nodes[d] {
                        Node::Int(n) => usize::try_from(n).map_err(|_| h.invalid("negative array dimension")),
                        _ => Err(h.invalid("array dimensions must be integers")),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                // `tolist()` nests a row list per leading dimension: flatten to C order.
                let mut items = items;
                for _ in 1..shape.len() {
                    let mut flat = Vec::with_capacity(items.len());
                    for &i in &items {
                        match &self.nodes[i] {
                            Node::List(row) => flat.extend_from_slice(row),
                            _ => return Err(h.invalid("a multi-dimensional object array must hold nested lists")),
                        }
                    }
                    items = flat;
                }
                let a = Array::from_objects(Dtype::simple(Kind::Object, 8), shape, items, false)
                    .map_err(|e| h.invalid(e))?;
                Ok(Node::Array(a))
            }
            other => Err(h.invalid(format!("unknown array type {other:?}"))),
        }
    }
}

/// A `JsonNode`'s value: `json.dumps` of a str, int, float, bool or None (Python writes
/// `NaN` and `Infinity` for non-finite floats).
fn json_scalar(text: &str) -> Result<Node, String> {
    match text {
        "NaN" => return Ok(Node::Float(f64::NAN)),
        "Infinity" => return Ok(Node::Float(f64::INFINITY)),
        "-Infinity" => return Ok(Node::Float(f64::NEG_INFINITY)),
        _ => {}
    }
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("content is not JSON: {e}"))?;
    Ok(match v {
        serde_json::Value::Null => Node::None,
        serde_json::Value::Bool(b) => Node::Bool(b),
        serde_json::Value::String(s) => Node::Str(s),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Node::Int(i),
            // An integer too wide for i64 (serde reads it as a float): as pickle's reader keeps it.
            _ if !text.contains(['.', 'e', 'E']) => Node::BigInt,
            (None, Some(f)) => Node::Float(f),
            (None, None) => return Err("unreadable number".into()),
        },
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            return Err("a JSON value must be a string, number, bool or null".into());
        }
    })
}

/// schema.json as parsed: like `serde_json::Value`, but objects keep their key order (a dict's
/// `key_types` follow its keys in order) without changing serde_json's features for the workspace.
#[derive(Debug)]
enum J {
    Null,
    /// A bool or a float: the schema's own fields never need their value.
    Scalar,
    Int(i64),
    UInt(u64),
    Str(String),
    List(Vec<J>),
    Map(Vec<(String, J)>),
}

impl J {
    /// The value of `key` in an object (the last one, as Python's json keeps).
    fn get(&self, key: &str) -> Option<&J> {
        match self {
            Self::Map(items) => items.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, _: bool) -> Result<J, E> {
        Ok(J::Scalar)
    }
    fn visit_i64<E>(self, v: i64) -> Result<J, E> {
        Ok(J::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(J::UInt(v))
    }
    fn visit_f64<E>(self, _: f64) -> Result<J, E> {
        Ok(J::Scalar)
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<J, E> {
        Ok(J::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(J::List(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut out = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, J>()? {
            out.push((k, v));
        }
        Ok(J::Map(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_become_plain_nodes() {
        assert_eq!(json_scalar("true"), Ok(Node::Bool(true)));
        assert_eq!(json_scalar("3"), Ok(Node::Int(3)));
        assert_eq!(json_scalar("\"1.9.1\""), Ok(Node::Str("1.9.1".into())));
        assert_eq!(json_scalar("100000000000000000000000"), Ok(Node::BigInt));
        assert!(matches!(json_scalar("NaN"), Ok(Node::Float(f)) if f.is_nan()));
        assert!(json_scalar("[1]").is_err() && json_scalar("nope").is_err());
    }

    /// A skops zip holding only `schema`, written with the zip crate.
    fn skops(schema: serde_json::Value) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("schema.json", zip::write::SimpleFileOptions::default()).unwrap();
        w.write_all(schema.to_string().as_bytes()).unwrap();
        w.finish().unwrap().into_inner()
    }

    fn leaf(loader: &str, class: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut n = serde_json::json!({"__loader__": loader, "__module__": "builtins", "__class__": class});
        n.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        n
    }

    #[test]
    fn cached_nodes_int_keys_and_nested_object_arrays() {
        let json = |v: &str| leaf("JsonNode", "str", serde_json::json!({"content": v}));
        let int = leaf("TypeNode", "int", serde_json::json!({}));
        let key_types = leaf("ListNode", "list", serde_json::json!({"content": [int]}));
        let dict = leaf(
            "DictNode",
            "dict",
            serde_json::json!({"content": {"7": json("1.5")}, "key_types": key_types, "__id__": 42}),
        );
        let cached =
            serde_json::json!({"__loader__": "CachedNode", "__module__": null, "__class__": null, "__id__": 42});
        let shape = leaf("TupleNode", "tuple", serde_json::json!({"content": [json("2"), json("2")]}));
        let rows = |a: &str, b: &str| leaf("ListNode", "list", serde_json::json!({"content": [json(a), json(b)]}));
        let mut array = leaf("NdArrayNode", "ndarray", serde_json::json!({"type": "json", "shape": shape}));
        array["__module__"] = "numpy".into();
        array["content"] = serde_json::json!([rows("\"a\"", "\"b\""), rows("\"c\"", "\"d\"")]);
        let root = leaf("ListNode", "list", serde_json::json!({"content": [dict, cached, array]}));
        let p = read(&skops(root), &Limits::default()).unwrap();
        let Node::List(items) = p.node(p.root) else { panic!("root {:?}", p.node(p.root)) };
        assert_eq!(items[0], items[1], "the cached node is the dict itself");
        let Node::Dict(pairs) = p.node(items[0]) else { panic!("not a dict") };
        assert_eq!((p.node(pairs[0].0), p.node(pairs[0].1)), (&Node::Int(7), &Node::Float(1.5)));
        let Node::Array(Array { shape, data: Data::Objects(cells), .. }) = p.node(items[2]) else {
            panic!("not an array")
        };
        let cells: Vec<&Node> = cells.iter().map(|&c| p.node(c)).collect();
        assert_eq!((shape.as_slice(), cells.len()), ([2, 2].as_slice(), 4));
        assert_eq!(cells[1], &Node::Str("b".into()));
        // A cached node naming no earlier object is an error, not a dangling reference.
        let dangling =
            serde_json::json!({"__loader__": "CachedNode", "__module__": null, "__class__": null, "__id__": 9});
        let err = read(&skops(dangling), &Limits::default()).unwrap_err().to_string();
        assert!(err.contains("refers to an unknown object"), "{err}");
    }

    #[test]
    fn functions_and_unknown_classes_are_refused_by_name() {
        let node = |loader: &str, module: &str, class: &str| {
            let j: J = serde_json::from_value(serde_json::json!({
                "__loader__": loader, "__module__": module, "__class__": class
            }))
            .unwrap();
            audit(&j).map_err(|e| e.to_string())
        };
        let err = node("FunctionNode", "posix", "system").unwrap_err();
        assert!(err.starts_with("refusing function posix.system: not a supported scikit-learn class"), "{err}");
        let err = node("ObjectNode", "builtins", "eval").unwrap_err();
        assert!(err.starts_with("refusing class builtins.eval"), "{err}");
        assert!(node("TypeNode", "os", "system").unwrap_err().starts_with("refusing type os.system"));
        assert!(node("ListNode", "os", "system").unwrap_err().starts_with("refusing class os.system"));
        assert!(node("NdArrayNode", "numpy.ma.core", "MaskedArray").is_err());
        assert!(node("WeirdNode", "a", "b").unwrap_err().contains("unsupported skops node WeirdNode"));
        assert!(node("ObjectNode", "sklearn.pipeline", "Pipeline").is_ok());
    }
}
