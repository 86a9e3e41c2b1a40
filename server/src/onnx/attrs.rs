//! Typed access to an ONNX node's attributes, shared by the checks and our operators.

use tract_onnx::pb::{AttributeProto, NodeProto};

fn find<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

/// Whether the node carries attribute `name`.
pub fn has(node: &NodeProto, name: &str) -> bool {
    find(node, name).is_some()
}

/// An `ints` attribute (empty when absent).
pub fn ints<'a>(node: &'a NodeProto, name: &str) -> &'a [i64] {
    find(node, name).map_or(&[], |a| a.ints.as_slice())
}

/// A `floats` attribute (empty when absent).
pub fn floats<'a>(node: &'a NodeProto, name: &str) -> &'a [f32] {
    find(node, name).map_or(&[], |a| a.floats.as_slice())
}

/// A `strings` attribute, each lossily UTF-8 (empty when absent).
pub fn strings(node: &NodeProto, name: &str) -> Vec<String> {
    find(node, name).map_or_else(Vec::new, |a| a.strings.iter().map(|s| String::from_utf8_lossy(s).into()).collect())
}

/// A single `int` attribute.
pub fn int(node: &NodeProto, name: &str) -> Option<i64> {
    find(node, name).map(|a| a.i)
}

/// A single `string` attribute.
pub fn string(node: &NodeProto, name: &str) -> Option<String> {
    find(node, name).map(|a| String::from_utf8_lossy(&a.s).into())
}

/// A single `float` attribute.
pub fn float(node: &NodeProto, name: &str) -> Option<f32> {
    find(node, name).map(|a| a.f)
}
