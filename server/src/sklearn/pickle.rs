//! A pickle opcode interpreter that builds plain data and never calls anything.
//!
//! It reads protocols 2 to 5 into an arena of [`Node`]s (objects can be shared through the memo
//! and filled in later by BUILD, so values are referenced by [`NodeId`]). Globals are looked up in
//! the allowlist ([`super::globals`]) when the GLOBAL / STACK_GLOBAL opcode is read, before
//! anything else happens; REDUCE, NEWOBJ and BUILD only apply to allowlisted names, each with a
//! fixed, data-only meaning. The interpreter loop is iterative; memory is bounded by the input.

use std::collections::HashMap;

use super::globals::{self, Global};
use super::joblib;
use super::numpy::{Array, Dtype, Kind};

/// Index of a node in [`Pickle::nodes`].
pub type NodeId = usize;

/// A value built by the interpreter.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (no estimator field needs one).
    BigInt,
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<NodeId>),
    Tuple(Vec<NodeId>),
    /// Key/value pairs in insertion order.
    Dict(Vec<(NodeId, NodeId)>),
    Set(Vec<NodeId>),
    Global(Global),
    /// An object of an allowlisted class: constructor arguments and the state BUILD gave it.
    Object {
        class: Global,
        args: Vec<NodeId>,
        state: Option<NodeId>,
    },
    /// What `numpy.core.multiarray._reconstruct` returns: an array that BUILD fills in.
    EmptyArray,
    Array(Array),
    Dtype(Dtype),
}

impl Node {
    /// A short name of the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Bool(_) => "bool",
            Self::Int(_) | Self::BigInt => "int",
            Self::Float(_) => "float",
            Self::Str(_) => "str",
            Self::Bytes(_) => "bytes",
            Self::List(_) => "list",
            Self::Tuple(_) => "tuple",
            Self::Dict(_) => "dict",
            Self::Set(_) => "set",
            Self::Global(_) => "class",
            Self::Object { .. } => "object",
            Self::EmptyArray | Self::Array(_) => "array",
            Self::Dtype(_) => "dtype",
        }
    }
}

/// The result of reading a pickle: every node, and the one the pickle returns.
#[derive(Debug)]
pub struct Pickle {
    pub nodes: Vec<Node>,
    pub root: NodeId,
    /// How many more array values the estimators may read (see [`Pickle::charge`]).
    budget: std::cell::Cell<usize>,
}

/// Values the interpreter may copy, and estimators may read, beyond twice the file's length: a
/// legitimate model copies and reads each stored value about once, so only a file that names one
/// value many times through the memo reaches the limit.
const READ_ALLOWANCE: usize = 8 << 20;

impl Pickle {
    /// A tree built by another reader (skops) from `input_len` bytes of model data, with the
    /// same read budget a pickle of that size gets.
    pub(super) fn from_nodes(nodes: Vec<Node>, root: NodeId, input_len: usize) -> Self {
        let allowance = input_len.saturating_mul(2).saturating_add(READ_ALLOWANCE);
        Self { nodes, root, budget: std::cell::Cell::new(allowance) }
    }

    /// The node `id` (an id the interpreter handed out always exists).
    pub fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&Node::None)
    }

    /// Accounts for reading `values` array values; refuses once the budget is spent.
    pub fn charge(&self, values: usize) -> Result<(), String> {
        let left = self.budget.get();
        if values > left {
            return Err("the model reads far more values than its file holds (arrays shared by many estimators)".into());
        }
        self.budget.set(left - values);
        Ok(())
    }
}

/// Limits on what a pickle may make the reader allocate.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest single array, in bytes.
    pub max_array_bytes: usize,
    /// Most pickles nested inside one another (joblib stores object arrays as inner pickles).
    pub max_nesting: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_array_bytes: 1 << 30, max_nesting: 4 }
    }
}

/// Why a pickle was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum PickleError {
    #[error("refusing global {name}: not a supported scikit-learn class; supported: {supported}")]
    RefusedGlobal { name: String, supported: String },
    #[error("not a pickle of protocol 2 to 5 (it does not start with the PROTO opcode 0x80)")]
    NotPickle,
    #[error("pickle protocol {0} is not supported (protocols 2 to 5 are)")]
    Protocol(u8),
    #[error("truncated pickle: {what} at byte {offset} needs {need} bytes, {left} left")]
    Truncated { what: &'static str, offset: usize, need: u64, left: usize },
    #[error("invalid pickle at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: String },
}

/// Reads a pickle (protocol 2 to 5) from `input`.
pub fn read(input: &[u8], limits: Limits) -> Result<Pickle, PickleError> {
    let allowance = input.len().saturating_mul(2).saturating_add(READ_ALLOWANCE);
    let copies = std::cell::Cell::new(allowance);
    let mut m = Machine { input, pos: 0, nodes: Vec::new(), limits, nesting: 0, copies };
    let root = m.run()?;
    let budget = std::cell::Cell::new(allowance);
    Ok(Pickle { nodes: m.nodes, root, budget })
}

/// The interpreter's state, shared with [`joblib`] (which reads array bytes after a BUILD).
pub(super) struct Machine<'a> {
    pub(super) input: &'a [u8],
    pub(super) pos: usize,
    pub(super) nodes: Vec<Node>,
    pub(super) limits: Limits,
    nesting: usize,
    /// How many more values (bytes, node ids, fields) may be copied out of existing nodes: the
    /// memo lets a small file name one large value many times (see [`Machine::copy`]).
    copies: std::cell::Cell<usize>,
}

/// The operand stack of one pickle, with Python's mark stack.
#[derive(Default)]
struct Stack {
    items: Vec<NodeId>,
    marks: Vec<Vec<NodeId>>,
}

impl<'a> Machine<'a> {
    /// An error at byte `offset`.
    pub(super) fn invalid(&self, offset: usize, reason: impl Into<String>) -> PickleError {
        PickleError::Invalid { offset, reason: reason.into() }
    }

    /// Accounts for copying `n` values of an existing node into a new one.
    pub(super) fn copy(&self, n: usize, at: usize) -> Result<(), PickleError> {
        let left = self.copies.get();
        if n > left {
            return Err(self.invalid(at, "the pickle copies far more data than it holds (one value reused many times)"));
        }
        self.copies.set(left - n);
        Ok(())
    }

    /// Takes `n` bytes at the current position.
    pub(super) fn take(&mut self, n: u64, what: &'static str) -> Result<&'a [u8], PickleError> {
        let left = self.input.len() - self.pos.min(self.input.len());
        let truncated = PickleError::Truncated { what, offset: self.pos, need: n, left };
        let n = usize::try_from(n).map_err(|_| truncated.clone())?;
        if n > left {
            return Err(truncated);
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.input[start..start + n])
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, PickleError> {
        Ok(self.take(1, what)?[0])
    }

    fn le<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], PickleError> {
        let b = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(b);
        Ok(a)
    }

    fn len_u32(&mut self, what: &'static str) -> Result<u64, PickleError> {
        Ok(u64::from(u32::from_le_bytes(self.le(what)?)))
    }

    fn len_u64(&mut self, what: &'static str) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.le(what)?))
    }

    /// A text line (GLOBAL's operands), at most 256 bytes.
    fn line(&mut self) -> Result<String, PickleError> {
        let start = self.pos;
        let rest = self.input.get(start..).unwrap_or_default();
        let end =
            rest.iter().take(257).position(|&b| b == b'\n').ok_or_else(|| self.invalid(start, "unterminated line"))?;
        self.pos = start + end + 1;
        String::from_utf8(rest[..end].to_vec()).map_err(|_| self.invalid(start, "line is not UTF-8"))
    }

    /// Adds a node to the arena.
    pub(super) fn push_node(&mut self, node: Node) -> NodeId {
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// The node `id` (ids always exist).
    pub(super) fn node(&self, id: NodeId) -> &Node {
        self.nodes.get(id).unwrap_or(&Node::None)
    }

    fn string(&mut self, n: u64, at: usize) -> Result<Node, PickleError> {
        let b = self.take(n, "string")?;
        std::str::from_utf8(b)
            .map(|s| Node::Str(s.to_string()))
            .map_err(|_| self.invalid(at, "string is not valid UTF-8"))
    }

    fn bytes(&mut self, n: u64) -> Result<Node, PickleError> {
        Ok(Node::Bytes(self.take(n, "bytes")?.to_vec()))
    }

    /// Runs one pickle from the current position to its STOP opcode; returns what it returns.
    pub(super) fn run(&mut self) -> Result<NodeId, PickleError> {
        let mut st = Stack::default();
        let mut memo: HashMap<u32, NodeId> = HashMap::new();
        match self.input.get(self.pos) {
            Some(0x80) => {}
            _ => return Err(PickleError::NotPickle),
        }
        loop {
            let at = self.pos;
            let op = self.u8("opcode")?;
            let pushed = match op {
                0x80 => {
                    let proto = self.u8("protocol")?;
                    if !(2..=5).contains(&proto) {
                        return Err(PickleError::Protocol(proto));
                    }
                    None
                }
                0x95 => {
                    // FRAME: a buffering hint; its length must lie within the file.
                    let n = self.len_u64("frame length")?;
                    let left = (self.input.len() - self.pos) as u64;
                    if n > left {
                        return Err(PickleError::Truncated { what: "frame", offset: at, need: n, left: left as usize });
                    }
                    None
                }
                b'.' => return st.pop(at, self),
                b'(' => {
                    st.marks.push(std::mem::take(&mut st.items));
                    None
                }
                b'0' => {
                    st.pop(at, self)?;
                    None
                }
                b'1' => {
                    st.pop_mark(at, self)?;
                    None
                }
                b'2' => {
                    let top = st.top(at, self)?;
                    st.items.push(top);
                    None
                }
                b'N' => Some(Node::None),
                0x88 => Some(Node::Bool(true)),
                0x89 => Some(Node::Bool(false)),
                b'J' => Some(Node::Int(i64::from(i32::from_le_bytes(self.le("BININT")?)))),
                b'K' => Some(Node::Int(i64::from(self.u8("BININT1")?))),
                b'M' => Some(Node::Int(i64::from(u16::from_le_bytes(self.le("BININT2")?)))),
                0x8a => {
                    let n = u64::from(self.u8("LONG1 length")?);
                    Some(self.long(n)?)
                }
                0x8b => {
                    let n = self.len_u32("LONG4 length")?;
                    Some(self.long(n)?)
                }
                b'G' => Some(Node::Float(f64::from_be_bytes(self.le("BINFLOAT")?))),
                0x8c => {
                    let n = u64::from(self.u8("string length")?);
                    Some(self.string(n, at)?)
                }
                b'X' => {
                    let n = self.len_u32("string length")?;
                    Some(self.string(n, at)?)
                }
                0x8d => {
                    let n = self.len_u64("string length")?;
                    Some(self.string(n, at)?)
                }
                b'C' | b'U' => {
                    let n = u64::from(self.u8("bytes length")?);
                    Some(self.bytes(n)?)
                }
                b'B' | b'T' => {
                    let n = self.len_u32("bytes length")?;
                    Some(self.bytes(n)?)
                }
                0x8e | 0x96 => {
                    let n = self.len_u64("bytes length")?;
                    Some(self.bytes(n)?)
                }
                b')' => Some(Node::Tuple(Vec::new())),
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    if st.items.len() < n {
                        return Err(self.invalid(at, "stack underflow"));
                    }
                    let items = st.items.split_off(st.items.len() - n);
                    Some(Node::Tuple(items))
                }
                b't' => Some(Node::Tuple(st.pop_mark(at, self)?)),
                b']' => Some(Node::List(Vec::new())),
                b'l' => Some(Node::List(st.pop_mark(at, self)?)),
                b'}' => Some(Node::Dict(Vec::new())),
                b'd' => {
                    let items = st.pop_mark(at, self)?;
                    Some(Node::Dict(pairs(&items, at, self)?))
                }
                0x8f => Some(Node::Set(Vec::new())),
                0x91 => Some(Node::Set(st.pop_mark(at, self)?)),
                b'a' => {
                    let v = st.pop(at, self)?;
                    let list = st.top(at, self)?;
                    self.extend(list, &[v], at)?;
                    None
                }
                b'e' | 0x90 => {
                    let items = st.pop_mark(at, self)?;
                    let list = st.top(at, self)?;
                    self.extend(list, &items, at)?;
                    None
                }
                b's' => {
                    let v = st.pop(at, self)?;
                    let k = st.pop(at, self)?;
                    let d = st.top(at, self)?;
                    self.set_items(d, &[k, v], at)?;
                    None
                }
                b'u' => {
                    let items = st.pop_mark(at, self)?;
                    let d = st.top(at, self)?;
                    self.set_items(d, &items, at)?;
                    None
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    Some(Node::Global(allow(&module, &name)?))
                }
                0x93 => {
                    let name = st.pop(at, self)?;
                    let module = st.pop(at, self)?;
                    match (self.node(module), self.node(name)) {
                        (Node::Str(m), Node::Str(n)) => Some(Node::Global(allow(m, n)?)),
                        _ => return Err(self.invalid(at, "STACK_GLOBAL needs two strings")),
                    }
                }
                b'R' => {
                    let args = st.pop(at, self)?;
                    let callable = st.pop(at, self)?;
                    let id = self.reduce(callable, args, at)?;
                    st.items.push(id);
                    None
                }
                0x81 | 0x92 => {
                    if op == 0x92 {
                        let kwargs = st.pop(at, self)?;
                        if !matches!(self.node(kwargs), Node::Dict(d) if d.is_empty()) {
                            return Err(self.invalid(at, "NEWOBJ_EX with keyword arguments is not supported"));
                        }
                    }
                    let args = st.pop(at, self)?;
                    let cls = st.pop(at, self)?;
                    let args = self.tuple(args, at)?;
                    match self.node(cls) {
                        Node::Global(g @ (Global::Class(_) | Global::NumpyArrayWrapper)) => {
                            Some(Node::Object { class: *g, args, state: None })
                        }
                        other => {
                            return Err(self.invalid(at, format!("cannot create an object of {}", other.type_name())));
                        }
                    }
                }
                b'b' => {
                    let state = st.pop(at, self)?;
                    let obj = st.top(at, self)?;
                    self.build(obj, state, at)?;
                    None
                }
                b'q' => {
                    let k = u32::from(self.u8("memo index")?);
                    memo.insert(k, st.top(at, self)?);
                    None
                }
                b'r' => {
                    let k = u32::from_le_bytes(self.le("memo index")?);
                    memo.insert(k, st.top(at, self)?);
                    None
                }
                0x94 => {
                    let k = u32::try_from(memo.len()).map_err(|_| self.invalid(at, "memo too large"))?;
                    memo.insert(k, st.top(at, self)?);
                    None
                }
                b'h' | b'j' => {
                    let k = if op == b'h' {
                        u32::from(self.u8("memo index")?)
                    } else {
                        u32::from_le_bytes(self.le("memo index")?)
                    };
                    let id = *memo.get(&k).ok_or_else(|| self.invalid(at, format!("memo key {k} not found")))?;
                    st.items.push(id);
                    None
                }
                0x97 | 0x98 => return Err(self.invalid(at, "out-of-band buffers are not supported (save in-band)")),
                b'I' | b'L' | b'F' | b'S' | b'V' | b'p' | b'g' | b'i' | b'o' => {
                    return Err(self.invalid(at, format!("protocol 0/1 opcode {:?} is not supported", op as char)));
                }
                b'P' | b'Q' => return Err(self.invalid(at, "persistent ids are not supported")),
                0x82..=0x84 => return Err(self.invalid(at, "extension registry codes are not supported")),
                _ => return Err(self.invalid(at, format!("unknown opcode 0x{op:02x}"))),
            };
            if let Some(node) = pushed {
                let id = self.push_node(node);
                st.items.push(id);
            }
        }
    }

    fn long(&mut self, n: u64) -> Result<Node, PickleError> {
        let b = self.take(n, "long")?;
        if b.is_empty() {
            return Ok(Node::Int(0));
        }
        if b.len() > 8 {
            return Ok(Node::BigInt);
        }
        let fill = if b[b.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut a = [fill; 8];
        a[..b.len()].copy_from_slice(b);
        Ok(Node::Int(i64::from_le_bytes(a)))
    }

    fn tuple(&self, id: NodeId, at: usize) -> Result<Vec<NodeId>, PickleError> {
        match self.node(id) {
            Node::Tuple(items) => self.copy(items.len(), at).map(|()| items.clone()),
            other => Err(self.invalid(at, format!("expected a tuple of arguments, found {}", other.type_name()))),
        }
    }

    fn extend(&mut self, target: NodeId, items: &[NodeId], at: usize) -> Result<(), PickleError> {
        match self.nodes.get_mut(target) {
            Some(Node::List(l) | Node::Set(l)) => {
                l.extend_from_slice(items);
                Ok(())
            }
            _ => Err(self.invalid(at, "APPEND to something that is not a list")),
        }
    }

    fn set_items(&mut self, target: NodeId, items: &[NodeId], at: usize) -> Result<(), PickleError> {
        let new = pairs(items, at, self)?;
        match self.nodes.get_mut(target) {
            Some(Node::Dict(d)) => {
                d.extend(new);
                Ok(())
            }
            _ => Err(self.invalid(at, "SETITEM on something that is not a dict")),
        }
    }

    /// REDUCE: the fixed meaning of each allowlisted callable, computed on plain data.
    fn reduce(&mut self, callable: NodeId, args: NodeId, at: usize) -> Result<NodeId, PickleError> {
        let g = match self.node(callable) {
            Node::Global(g) => *g,
            other => return Err(self.invalid(at, format!("cannot call a {}", other.type_name()))),
        };
        let args = self.tuple(args, at)?;
        let arg = |i: usize| args.get(i).copied().unwrap_or(usize::MAX);
        let node = match g {
            Global::Reconstruct => match self.node(arg(0)) {
                Node::Global(Global::NdArray) => Node::EmptyArray,
                _ => return Err(self.invalid(at, "_reconstruct is only supported for numpy.ndarray")),
            },
            Global::Dtype => match self.node(arg(0)) {
                Node::Str(s) => Node::Dtype(Dtype::parse(s).map_err(|e| self.invalid(at, e))?),
                _ => return Err(self.invalid(at, "numpy.dtype needs a type string")),
            },
            Global::Scalar => {
                let Node::Dtype(d) = self.node(arg(0)) else {
                    return Err(self.invalid(at, "numpy scalar needs a dtype"));
                };
                if d.kind == Kind::Object {
                    return self
                        .nodes
                        .get(arg(1))
                        .map(|_| arg(1))
                        .ok_or_else(|| self.invalid(at, "missing scalar value"));
                }
                let Node::Bytes(b) = self.node(arg(1)) else {
                    return Err(self.invalid(at, "numpy scalar needs bytes"));
                };
                scalar_node(d, b).ok_or_else(|| self.invalid(at, format!("unreadable numpy scalar of {:?}", d.kind)))?
            }
            Global::FromBuffer => {
                let (Node::Bytes(buf), Node::Dtype(d), Node::Tuple(shape), Node::Str(order)) =
                    (self.node(arg(0)), self.node(arg(1)), self.node(arg(2)), self.node(arg(3)))
                else {
                    return Err(self.invalid(at, "_frombuffer needs (buffer, dtype, shape, order)"));
                };
                let shape = self.shape(shape, at)?;
                self.copy(buf.len(), at)?;
                let arr = Array::from_raw(d.clone(), shape, buf, order == "F", self.limits.max_array_bytes)
                    .map_err(|e| self.invalid(at, e))?;
                Node::Array(arr)
            }
            Global::CodecsEncode => match (self.node(arg(0)), self.node(arg(1))) {
                (Node::Str(s), Node::Str(enc)) if enc == "latin1" || enc == "latin-1" => {
                    self.copy(s.len(), at)?;
                    let b: Option<Vec<u8>> = s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect();
                    Node::Bytes(b.ok_or_else(|| self.invalid(at, "latin1 text out of range"))?)
                }
                _ => return Err(self.invalid(at, "_codecs.encode is only supported for latin1 text")),
            },
            Global::CopyregReconstructor => match (self.node(arg(0)), self.node(arg(1))) {
                (Node::Global(c @ Global::Class(_)), Node::Global(Global::Object)) => {
                    Node::Object { class: *c, args: Vec::new(), state: None }
                }
                _ => return Err(self.invalid(at, "copyreg._reconstructor is only supported for plain objects")),
            },
            Global::ByteArray => match args.first().map(|&a| self.node(a)) {
                None => Node::Bytes(Vec::new()),
                Some(Node::Bytes(b)) => self.copy(b.len(), at).map(|()| Node::Bytes(b.clone()))?,
                _ => return Err(self.invalid(at, "bytearray needs bytes")),
            },
            Global::Set => match self.node(arg(0)) {
                Node::List(l) => self.copy(l.len(), at).map(|()| Node::Set(l.clone()))?,
                _ => return Err(self.invalid(at, "set needs a list")),
            },
            Global::Class(_) | Global::NumpyArrayWrapper => Node::Object { class: g, args, state: None },
            Global::NdArray | Global::Object => return Err(self.invalid(at, "cannot call numpy.ndarray or object")),
        };
        Ok(self.push_node(node))
    }

    /// Array dimensions from a tuple of non-negative ints.
    pub(super) fn shape(&self, dims: &[NodeId], at: usize) -> Result<Vec<usize>, PickleError> {
        dims.iter()
            .map(|&d| match self.node(d) {
                Node::Int(n) => usize::try_from(*n).map_err(|_| self.invalid(at, "negative array dimension")),
                _ => Err(self.invalid(at, "array dimensions must be integers")),
            })
            .collect()
    }

    /// BUILD: sets the state of an array, a dtype or an object.
    fn build(&mut self, obj: NodeId, state: NodeId, at: usize) -> Result<(), PickleError> {
        let node = match self.node(obj) {
            Node::EmptyArray => Node::Array(self.array_state(state, at)?),
            Node::Dtype(d) => {
                self.copy(d.fields.len(), at)?;
                Node::Dtype(self.dtype_state(d.clone(), state, at)?)
            }
            Node::Object { class: Global::NumpyArrayWrapper, .. } => self.wrapped_array(state, at)?,
            Node::Object { class, args, .. } => {
                self.copy(args.len(), at)?;
                Node::Object { class: *class, args: args.clone(), state: Some(state) }
            }
            other => return Err(self.invalid(at, format!("cannot set the state of a {}", other.type_name()))),
        };
        if let Some(slot) = self.nodes.get_mut(obj) {
            *slot = node;
        }
        Ok(())
    }

    /// joblib's wrapper: the array's bytes (or an inner pickle) follow the BUILD opcode.
    fn wrapped_array(&mut self, state: NodeId, at: usize) -> Result<Node, PickleError> {
        if self.nesting >= self.limits.max_nesting {
            return Err(self.invalid(at, "pickles nested too deeply"));
        }
        self.nesting += 1;
        let arr = joblib::read_wrapped_array(self, state, at);
        self.nesting -= 1;
        arr
    }

    /// numpy's `ndarray.__setstate__((version, shape, dtype, is_fortran, data))`.
    fn array_state(&self, state: NodeId, at: usize) -> Result<Array, PickleError> {
        let items = self.tuple(state, at)?;
        let items = match items.len() {
            5 => &items[1..],
            4 => &items[..],
            n => return Err(self.invalid(at, format!("array state has {n} items, expected 5"))),
        };
        let (Node::Tuple(shape), Node::Dtype(dtype)) = (self.node(items[0]), self.node(items[1])) else {
            return Err(self.invalid(at, "array state needs a shape tuple and a dtype"));
        };
        let shape = self.shape(shape, at)?;
        let fortran = matches!(self.node(items[2]), Node::Bool(true) | Node::Int(1));
        let size = match self.node(items[3]) {
            Node::List(l) => l.len(),
            Node::Bytes(b) => b.len(),
            _ => 0,
        };
        self.copy(size, at)?;
        let arr = match (dtype.kind, self.node(items[3])) {
            (Kind::Object, Node::List(objs)) => Array::from_objects(dtype.clone(), shape, objs.clone(), fortran),
            (Kind::Object, _) => return Err(self.invalid(at, "object array state needs a list")),
            (_, Node::Bytes(raw)) => Array::from_raw(dtype.clone(), shape, raw, fortran, self.limits.max_array_bytes),
            (_, other) => {
                return Err(self.invalid(at, format!("array data must be bytes, found {}", other.type_name())));
            }
        };
        arr.map_err(|e| self.invalid(at, e))
    }

    /// numpy's `dtype.__setstate__((3, byteorder, subarray, names, fields, elsize, alignment, flags))`.
    fn dtype_state(&self, mut d: Dtype, state: NodeId, at: usize) -> Result<Dtype, PickleError> {
        let items = self.tuple(state, at)?;
        if !(8..=9).contains(&items.len()) {
            return Err(self.invalid(at, format!("dtype state has {} items, expected 8", items.len())));
        }
        let bad = |why: &str| self.invalid(at, format!("dtype state: {why}"));
        match self.node(items[1]) {
            Node::Str(s) if s == ">" => d.little_endian = false,
            Node::Str(s) if matches!(s.as_str(), "<" | "|" | "=") => d.little_endian = true,
            _ => return Err(bad("unknown byte order")),
        }
        if !matches!(self.node(items[2]), Node::None) {
            return Err(bad("sub-array dtypes are not supported"));
        }
        if let Node::Int(elsize) = self.node(items[5])
            && matches!(d.kind, Kind::Unicode | Kind::Bytes | Kind::Record)
            && *elsize >= 0
        {
            d.itemsize = usize::try_from(*elsize).map_err(|_| bad("element size"))?;
        }
        if let Node::Dict(fields) = self.node(items[4]) {
            self.copy(fields.len(), at)?;
            for &(k, v) in fields {
                let (Node::Str(name), Node::Tuple(spec)) = (self.node(k), self.node(v)) else {
                    return Err(bad("fields must map names to (dtype, offset)"));
                };
                let (Some(Node::Dtype(fd)), Some(Node::Int(off))) =
                    (spec.first().map(|&i| self.node(i)), spec.get(1).map(|&i| self.node(i)))
                else {
                    return Err(bad("fields must map names to (dtype, offset)"));
                };
                if !fd.fields.is_empty() || matches!(fd.kind, Kind::Object | Kind::Record) {
                    return Err(bad("nested record or object fields are not supported"));
                }
                let offset = usize::try_from(*off).map_err(|_| bad("negative field offset"))?;
                d.fields.push(super::numpy::Field { name: name.clone(), dtype: fd.clone(), offset });
            }
            d.check_fields().map_err(|e| bad(&e))?;
        }
        Ok(d)
    }
}

impl Stack {
    fn pop(&mut self, at: usize, m: &Machine) -> Result<NodeId, PickleError> {
        self.items.pop().ok_or_else(|| m.invalid(at, "stack underflow"))
    }

    fn top(&self, at: usize, m: &Machine) -> Result<NodeId, PickleError> {
        self.items.last().copied().ok_or_else(|| m.invalid(at, "stack underflow"))
    }

    fn pop_mark(&mut self, at: usize, m: &Machine) -> Result<Vec<NodeId>, PickleError> {
        let outer = self.marks.pop().ok_or_else(|| m.invalid(at, "no MARK on the stack"))?;
        Ok(std::mem::replace(&mut self.items, outer))
    }
}

fn pairs(items: &[NodeId], at: usize, m: &Machine) -> Result<Vec<(NodeId, NodeId)>, PickleError> {
    if !items.len().is_multiple_of(2) {
        return Err(m.invalid(at, "odd number of dict items"));
    }
    Ok(items.chunks_exact(2).map(|p| (p[0], p[1])).collect())
}

fn allow(module: &str, name: &str) -> Result<Global, PickleError> {
    globals::lookup(module, name).ok_or_else(|| PickleError::RefusedGlobal {
        name: format!("{module}.{name}"),
        supported: globals::supported_list(),
    })
}

/// The plain value of a numpy scalar of dtype `d` stored as bytes `b`.
pub(super) fn scalar_node(d: &Dtype, b: &[u8]) -> Option<Node> {
    use super::numpy::Scalar;
    Some(match super::numpy::read_scalar(d, b)? {
        Scalar::Int(i) => Node::Int(i),
        Scalar::Float(f) => Node::Float(f),
        Scalar::Bool(v) => Node::Bool(v),
        Scalar::Str(s) => Node::Str(s),
        Scalar::Bytes(b) => Node::Bytes(b),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(body: &[u8]) -> Result<Pickle, PickleError> {
        let mut bytes = vec![0x80, 4];
        bytes.extend_from_slice(body);
        read(&bytes, Limits::default())
    }

    #[test]
    fn memo_frames_and_integers() {
        // FRAME, [-2 (LONG1), 300 (BININT2)] memoised, then fetched again into a tuple.
        let p = run(b"\x95\x0e\x00\x00\x00\x00\x00\x00\x00]\x94(\x8a\x01\xfeM\x2c\x01eh\x00\x85.").unwrap();
        let Node::Tuple(t) = p.node(p.root) else { panic!("not a tuple: {:?}", p.node(p.root)) };
        let Node::List(l) = p.node(t[0]) else { panic!("not a list") };
        assert_eq!(l.iter().map(|&i| p.node(i).clone()).collect::<Vec<_>>(), vec![Node::Int(-2), Node::Int(300)]);
    }

    #[test]
    fn stack_global_is_checked_before_anything_runs() {
        let err = run(b"\x8c\x02os\x8c\x06system\x93\x8c\x02id\x85R.").unwrap_err();
        assert!(err.to_string().starts_with("refusing global os.system: not a supported scikit-learn class"), "{err}");
    }

    #[test]
    fn malformed_streams_are_errors() {
        let err = |b: &[u8]| run(b).unwrap_err().to_string();
        assert!(err(b"").contains("truncated"));
        assert!(err(b"0.").contains("stack underflow"));
        assert!(err(b"e.").contains("no MARK"));
        assert!(err(b"h\x05.").contains("memo key 5 not found"));
        assert!(err(b"\x97.").contains("out-of-band buffers"));
        assert!(err(b"\x8d\xff\xff\xff\xff\xff\xff\xff\xff").contains("truncated"));
        assert!(err(b"\x95\xff\x00\x00\x00\x00\x00\x00\x00N.").contains("truncated pickle: frame"));
        assert!(err(b"I1\n.").contains("protocol 0/1 opcode"));
        assert!(err(b"\xff").contains("unknown opcode 0xff"));
        assert_eq!(read(b"\x80\x01N.", Limits::default()).unwrap_err(), PickleError::Protocol(1));
    }

    #[test]
    fn one_value_reused_many_times_is_refused() {
        // bytearray(16 MiB of bytes) called 100,000 times on the memoised argument: 1.6 TB of copies.
        let mut body = b"c__builtin__\nbytearray\nq\x00\x8e".to_vec();
        body.extend_from_slice(&(16u64 << 20).to_le_bytes());
        body.extend(std::iter::repeat_n(b'x', 16 << 20));
        body.extend_from_slice(b"\x85q\x01(");
        for _ in 0..100_000 {
            body.extend_from_slice(b"h\x00h\x01R");
        }
        body.extend_from_slice(b"l.");
        let err = run(&body).unwrap_err().to_string();
        assert!(err.contains("copies far more data than it holds"), "{err}");
    }

    #[test]
    fn deep_nesting_needs_no_recursion() {
        // 200,000 lists, each appended into the one before it.
        let n = 200_000;
        let mut body = vec![b']'; n];
        body.extend(std::iter::repeat_n(b'a', n - 1));
        body.push(b'.');
        let p = run(&body).unwrap();
        assert!(matches!(p.node(p.root), Node::List(l) if l.len() == 1));
    }
}
