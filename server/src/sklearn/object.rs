//! Typed access to the state of a pickled scikit-learn object (its `__dict__`), with errors that
//! name the class and the attribute.

use super::SklearnError;
use super::globals::Global;
use super::numpy::{Array, Data, Kind, Scalar};
use super::pickle::{Node, NodeId, Pickle};

/// A class label: scikit-learn keeps `classes_` as ints, strings, floats or bools.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Label {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
}

impl std::fmt::Display for Label {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Bool(b) => write!(f, "{}", if *b { "True" } else { "False" }),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// A pickled object of an allowlisted class, with its state dict.
#[derive(Clone, Copy)]
pub struct Obj<'p> {
    pub p: &'p Pickle,
    pub class: &'static str,
    pub args: &'p [NodeId],
    state: &'p [(NodeId, NodeId)],
}

impl<'p> Obj<'p> {
    /// The object at `id`; anything else is an error naming what was found.
    pub fn at(p: &'p Pickle, id: NodeId) -> Result<Self, SklearnError> {
        match p.node(id) {
            Node::Object { class: Global::Class(class), args, state } => {
                let state = match state.map(|s| p.node(s)) {
                    Some(Node::Dict(d)) => d.as_slice(),
                    // A (dict, slots) pair, as objects with __slots__ pickle.
                    Some(Node::Tuple(t)) => match t.first().map(|&s| p.node(s)) {
                        Some(Node::Dict(d)) => d.as_slice(),
                        _ => &[],
                    },
                    _ => &[],
                };
                // Attribute lookups scan the state; a dict shared by many objects must not make them endless.
                let err = |reason| SklearnError::Invalid { class: class.to_string(), reason };
                p.charge(state.len()).map_err(err)?;
                Ok(Self { p, class, args, state })
            }
            other => Err(SklearnError::NotEstimator(other.type_name())),
        }
    }

    /// An error naming this object's class.
    pub fn err(&self, reason: impl Into<String>) -> SklearnError {
        SklearnError::Invalid { class: self.class.to_string(), reason: reason.into() }
    }

    /// The attribute `key`, if the object has it.
    pub fn id(&self, key: &str) -> Option<NodeId> {
        self.state.iter().rev().find(|(k, _)| matches!(self.p.node(*k), Node::Str(s) if s == key)).map(|&(_, v)| v)
    }

    /// The attribute `key`, if present.
    pub fn get(&self, key: &str) -> Option<&'p Node> {
        self.id(key).map(|id| self.p.node(id))
    }

    /// The attribute `key`, which must be present (a fitted estimator has it).
    pub fn req(&self, key: &str) -> Result<&'p Node, SklearnError> {
        self.get(key).ok_or_else(|| self.err(format!("missing attribute {key} (is the estimator fitted?)")))
    }

    /// A child object (a tree, a step).
    pub fn obj(&self, key: &str) -> Result<Obj<'p>, SklearnError> {
        let id = self.id(key).ok_or_else(|| self.err(format!("missing attribute {key}")))?;
        Obj::at(self.p, id)
    }

    /// A string attribute.
    pub fn str(&self, key: &str) -> Result<&'p str, SklearnError> {
        match self.req(key)? {
            Node::Str(s) => Ok(s),
            other => Err(self.err(format!("{key} must be a string, found {}", other.type_name()))),
        }
    }

    /// A bool attribute, `default` when absent (older versions lack some).
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, SklearnError> {
        match self.get(key) {
            None => Ok(default),
            Some(Node::Bool(b)) => Ok(*b),
            Some(Node::Int(i)) => Ok(*i != 0),
            Some(other) => Err(self.err(format!("{key} must be a bool, found {}", other.type_name()))),
        }
    }

    /// A non-negative integer attribute.
    pub fn usize(&self, key: &str) -> Result<usize, SklearnError> {
        match self.req(key)? {
            Node::Int(i) => usize::try_from(*i).map_err(|_| self.err(format!("{key} is negative"))),
            other => Err(self.err(format!("{key} must be an integer, found {}", other.type_name()))),
        }
    }

    /// A number or numeric array as (shape, values); a plain number has shape `[]`.
    pub fn numbers(&self, key: &str) -> Result<(Vec<usize>, Vec<f64>), SklearnError> {
        numbers(self.p, self.req(key)?).map_err(|e| self.err(format!("{key}: {e}")))
    }

    /// A numeric vector of exactly `n` values (a scalar is repeated, as numpy broadcasts it).
    pub fn vector(&self, key: &str, n: usize) -> Result<Vec<f64>, SklearnError> {
        let (shape, v) = self.numbers(key)?;
        match (shape.as_slice(), v.len()) {
            ([], 1) => Ok(vec![v[0]; n]),
            (_, len) if len == n && shape.iter().filter(|&&d| d != 1).count() <= 1 => Ok(v),
            _ => Err(self.err(format!("{key} has shape {shape:?}, expected {n} values"))),
        }
    }

    /// An optional numeric vector of `n` values (`None` stays `None`).
    pub fn opt_vector(&self, key: &str, n: usize) -> Result<Option<Vec<f64>>, SklearnError> {
        match self.get(key) {
            None | Some(Node::None) => Ok(None),
            Some(_) => self.vector(key, n).map(Some),
        }
    }

    /// A list or tuple attribute, as node ids.
    pub fn items(&self, key: &str) -> Result<&'p [NodeId], SklearnError> {
        let items = match self.req(key)? {
            Node::List(l) | Node::Tuple(l) => l,
            Node::Array(Array { data: Data::Objects(l), .. }) => l,
            other => return Err(self.err(format!("{key} must be a list, found {}", other.type_name()))),
        };
        self.p.charge(items.len()).map_err(|e| self.err(e))?;
        Ok(items)
    }

    /// `classes_` as labels.
    pub fn labels(&self, key: &str) -> Result<Vec<Label>, SklearnError> {
        labels(self.p, self.req(key)?).map_err(|e| self.err(format!("{key}: {e}")))
    }

    /// `feature_names_in_`, if the estimator was fitted on named columns.
    pub fn feature_names(&self) -> Result<Option<Vec<String>>, SklearnError> {
        match self.get("feature_names_in_") {
            None | Some(Node::None) => Ok(None),
            Some(n) => labels(self.p, n)
                .map(|l| Some(l.iter().map(Label::to_string).collect()))
                .map_err(|e| self.err(format!("feature_names_in_: {e}"))),
        }
    }
}

/// A number or numeric array as (shape, values).
pub fn numbers(p: &Pickle, node: &Node) -> Result<(Vec<usize>, Vec<f64>), String> {
    match node {
        Node::Float(f) => Ok((Vec::new(), vec![*f])),
        Node::Int(i) => Ok((Vec::new(), vec![*i as f64])),
        Node::Bool(b) => Ok((Vec::new(), vec![f64::from(u8::from(*b))])),
        Node::Tuple(items) | Node::List(items) => {
            p.charge(items.len())?;
            Ok((vec![items.len()], number_items(p, items)?))
        }
        Node::Array(a) => match p.charge(a.len()).map(|()| &a.data)? {
            Data::Raw(_) => Ok((a.shape.clone(), a.to_f64()?)),
            Data::Objects(items) => Ok((a.shape.clone(), number_items(p, items)?)),
        },
        other => Err(format!("expected a number or an array, found {}", other.type_name())),
    }
}

fn number_items(p: &Pickle, items: &[NodeId]) -> Result<Vec<f64>, String> {
    items
        .iter()
        .map(|&i| match p.node(i) {
            Node::Float(f) => Ok(*f),
            Node::Int(i) => Ok(*i as f64),
            other => Err(format!("expected numbers, found {}", other.type_name())),
        })
        .collect()
}

/// Labels from an array (of ints, strings, objects) or a list.
fn labels(p: &Pickle, node: &Node) -> Result<Vec<Label>, String> {
    let one = |n: &Node| match n {
        Node::Int(i) => Ok(Label::Int(*i)),
        Node::Float(f) => Ok(Label::Float(*f)),
        Node::Bool(b) => Ok(Label::Bool(*b)),
        Node::Str(s) => Ok(Label::Str(s.clone())),
        other => Err(format!("unsupported label of type {}", other.type_name())),
    };
    match node {
        Node::Array(a) => match p.charge(a.len()).map(|()| &a.data)? {
            Data::Objects(items) => items.iter().map(|&i| one(p.node(i))).collect(),
            Data::Raw(_) if a.dtype.kind == Kind::Record => Err("a record array is not a list of labels".into()),
            Data::Raw(_) => a
                .scalars()?
                .into_iter()
                .map(|s| match s {
                    Scalar::Int(i) => Ok(Label::Int(i)),
                    Scalar::Float(f) => Ok(Label::Float(f)),
                    Scalar::Bool(b) => Ok(Label::Bool(b)),
                    Scalar::Str(s) => Ok(Label::Str(s)),
                    Scalar::Bytes(b) => Ok(Label::Str(String::from_utf8_lossy(&b).into_owned())),
                })
                .collect(),
        },
        Node::List(items) | Node::Tuple(items) => {
            p.charge(items.len())?;
            items.iter().map(|&i| one(p.node(i))).collect()
        }
        other => Err(format!("expected an array of labels, found {}", other.type_name())),
    }
}
