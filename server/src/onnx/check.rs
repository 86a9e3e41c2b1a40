//! Checks an ONNX graph before tract sees it: tract evaluates tree ensembles with unchecked
//! indexing and resolves external tensor data from the file system, so a hostile file must be
//! refused here, with a one-line reason, rather than reach either.

use std::collections::HashSet;

use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};

use super::OnnxError;
use super::attrs::{floats, has, ints, strings};

/// Most elements one initializer or constant may declare.
const MAX_TENSOR_ELEMENTS: u64 = 1 << 28;
/// Deepest nesting of subgraphs (`If`, `Loop`, `Scan` bodies).
const MAX_GRAPH_DEPTH: usize = 8;
/// Most targets a tree regressor may declare.
const MAX_TARGETS: i64 = 1 << 16;

fn invalid(m: String) -> OnnxError {
    OnnxError::Invalid(m)
}

/// Checks every node and tensor of `graph` (and its subgraphs); `supported` tells which op types
/// the runtime has.
pub fn graph(graph: &GraphProto, supported: &dyn Fn(&str) -> bool) -> Result<(), OnnxError> {
    walk(graph, supported, 0)
}

fn walk(graph: &GraphProto, supported: &dyn Fn(&str) -> bool, depth: usize) -> Result<(), OnnxError> {
    if depth > MAX_GRAPH_DEPTH {
        return Err(invalid(format!("subgraphs nest deeper than {MAX_GRAPH_DEPTH}")));
    }
    if let Some(t) = graph.sparse_initializer.first() {
        let name = t.values.as_ref().map_or("", |v| v.name.as_str());
        return Err(invalid(format!("sparse initializer {name:?} is not supported")));
    }
    for t in &graph.initializer {
        tensor(t)?;
    }
    for node in &graph.node {
        if !supported(&node.op_type) {
            return Err(OnnxError::UnsupportedOp { op: node.op_type.clone(), domain: node.domain.clone() });
        }
        for a in &node.attribute {
            for t in a.t.iter().chain(&a.tensors) {
                tensor(t)?;
            }
            if a.sparse_tensor.is_some() || !a.sparse_tensors.is_empty() {
                return Err(invalid(format!("node {:?}: sparse tensor attributes are not supported", node.name)));
            }
            for g in a.g.iter().chain(&a.graphs) {
                walk(g, supported, depth + 1)?;
            }
        }
        match node.op_type.as_str() {
            "TreeEnsembleClassifier" => tree_ensemble(node, "class", class_count(node)?)?,
            "TreeEnsembleRegressor" => {
                let n = super::attrs::int(node, "n_targets").unwrap_or(1);
                if !(1..=MAX_TARGETS).contains(&n) {
                    return Err(invalid(format!("node {:?}: n_targets {n} is out of range", node.name)));
                }
                tree_ensemble(node, "target", n as usize)?;
            }
            _ => {}
        }
    }
    outputs_are_defined(graph)
}

/// Every graph output must name a value the graph has (an input, an initializer, a node's output
/// or input): tract looks outputs up by name and panics on a missing one (found by fuzzing).
fn outputs_are_defined(graph: &GraphProto) -> Result<(), OnnxError> {
    let known: HashSet<&str> = graph
        .input
        .iter()
        .map(|i| i.name.as_str())
        .chain(graph.initializer.iter().map(|t| t.name.as_str()))
        .chain(graph.node.iter().flat_map(|n| n.output.iter().chain(&n.input)).map(String::as_str))
        .collect();
    match graph.output.iter().find(|o| !known.contains(o.name.as_str())) {
        Some(o) => Err(invalid(format!("graph output {:?} is not produced by any node, input or initializer", o.name))),
        None => Ok(()),
    }
}

/// Declared element count of a tensor, checked against the data it holds; external data refused.
fn tensor(t: &TensorProto) -> Result<(), OnnxError> {
    let name = &t.name;
    if t.data_location == Some(1) || !t.external_data.is_empty() {
        return Err(invalid(format!("tensor {name:?} keeps its data in an external file, which is not supported")));
    }
    if t.segment.is_some() {
        return Err(invalid(format!("tensor {name:?} is segmented, which is not supported")));
    }
    let mut n: u64 = 1;
    for &d in &t.dims {
        let d = u64::try_from(d).map_err(|_| invalid(format!("tensor {name:?} has a negative dimension {d}")))?;
        n = n.checked_mul(d).filter(|&n| n <= MAX_TENSOR_ELEMENTS).ok_or_else(|| {
            invalid(format!("tensor {name:?} declares shape {:?}, over {MAX_TENSOR_ELEMENTS} elements", t.dims))
        })?;
    }
    let typed = t.float_data.len()
        + t.int32_data.len()
        + t.string_data.len()
        + t.int64_data.len()
        + t.double_data.len()
        + t.uint64_data.len();
    let ok = match (t.raw_data.is_empty(), element_bytes(t.data_type)) {
        (false, Some(size)) => t.raw_data.len() as u64 == n * size,
        (false, None) => false,
        (true, _) => typed as u64 == n,
    };
    if !ok {
        return Err(invalid(format!(
            "tensor {name:?} of shape {:?} (type {}) does not hold the data its shape declares",
            t.dims, t.data_type
        )));
    }
    Ok(())
}

/// Bytes per element of an ONNX `TensorProto.DataType` stored as raw data.
fn element_bytes(data_type: i32) -> Option<u64> {
    match data_type {
        2 | 3 | 9 => Some(1),   // uint8, int8, bool
        4 | 5 | 10 => Some(2),  // uint16, int16, float16
        1 | 6 | 12 => Some(4),  // float, int32, uint32
        7 | 11 | 13 => Some(8), // int64, double, uint64
        _ => None,
    }
}

fn class_count(node: &NodeProto) -> Result<usize, OnnxError> {
    let n = ints(node, "classlabels_int64s").len() + strings(node, "classlabels_strings").len();
    if n == 0 {
        return Err(invalid(format!("node {:?}: a tree classifier without class labels", node.name)));
    }
    Ok(n)
}

/// Proves what tract's tree evaluation assumes without checking: equal attribute lengths, trees
/// numbered from 0, node ids 0..n within each tree, children inside their tree and after their
/// parent (so a walk always ends), and every vote for a known class or target.
fn tree_ensemble(node: &NodeProto, leaf: &str, n_outputs: usize) -> Result<(), OnnxError> {
    let bad = |m: String| invalid(format!("tree ensemble {:?}: {m}", node.name));
    for a in ["nodes_values_as_tensor", "nodes_hitrates_as_tensor", "base_values_as_tensor"] {
        if has(node, a) {
            return Err(bad(format!("{a} (float64 trees) is not supported; export the trees as float32")));
        }
    }
    if has(node, &format!("{leaf}_weights_as_tensor")) {
        return Err(bad(format!("{leaf}_weights_as_tensor (float64 trees) is not supported; export as float32")));
    }
    let features = ints(node, "nodes_featureids");
    let n = features.len();
    let tree_ids = ints(node, "nodes_treeids");
    let node_ids = ints(node, "nodes_nodeids");
    let true_ids = ints(node, "nodes_truenodeids");
    let false_ids = ints(node, "nodes_falsenodeids");
    let modes = strings(node, "nodes_modes");
    let lens = [tree_ids.len(), node_ids.len(), true_ids.len(), false_ids.len(), modes.len()];
    if n == 0 || lens.iter().any(|&l| l != n) || floats(node, "nodes_values").len() != n {
        return Err(bad(format!("node attributes must all have the same non-zero length ({n} feature ids)")));
    }
    let missing = ints(node, "nodes_missing_value_tracks_true").len();
    if missing != 0 && missing != n {
        return Err(bad("nodes_missing_value_tracks_true has the wrong length".into()));
    }
    let sizes = tree_sizes(tree_ids).map_err(|m| bad(format!("nodes_treeids: {m}")))?;
    let mut seen = HashSet::with_capacity(n);
    for i in 0..n {
        let (tree, id) = (tree_ids[i] as usize, node_ids[i]);
        let size = sizes[tree] as i64;
        if !(0..size).contains(&id) || !seen.insert((tree, id)) {
            return Err(bad(format!("tree {tree} has node id {id}, not one of 0..{size} used once")));
        }
        if modes[i] == "LEAF" {
            continue;
        }
        if !["BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT", "BRANCH_EQ", "BRANCH_NEQ"]
            .contains(&modes[i].as_str())
        {
            return Err(bad(format!("unknown node mode {:?}", modes[i])));
        }
        if !(0..=u32::MAX as i64).contains(&features[i]) {
            return Err(bad(format!("node {id} of tree {tree} splits on feature {}", features[i])));
        }
        for child in [true_ids[i], false_ids[i]] {
            if child <= id || child >= size {
                return Err(bad(format!("node {id} of tree {tree} has child {child}, outside {}..{size}", id + 1)));
            }
        }
    }
    let leaf_ids = ints(node, &format!("{leaf}_ids"));
    let leaf_trees = ints(node, &format!("{leaf}_treeids"));
    let leaf_nodes = ints(node, &format!("{leaf}_nodeids"));
    let m = leaf_ids.len();
    if m == 0 || leaf_trees.len() != m || leaf_nodes.len() != m || floats(node, &format!("{leaf}_weights")).len() != m {
        return Err(bad(format!("{leaf}_* attributes must all have the same non-zero length")));
    }
    let leaf_sizes = tree_sizes(leaf_trees).map_err(|m| bad(format!("{leaf}_treeids: {m}")))?;
    if leaf_sizes.len() != sizes.len() {
        return Err(bad(format!("{} trees have nodes but {} have votes", sizes.len(), leaf_sizes.len())));
    }
    for i in 0..m {
        let (tree, id) = (leaf_trees[i] as usize, leaf_nodes[i]);
        if !seen.contains(&(tree, id)) {
            return Err(bad(format!("a vote names node {id} of tree {tree}, which does not exist")));
        }
        if !(0..n_outputs as i64).contains(&leaf_ids[i]) {
            return Err(bad(format!("a vote is for output {} of {n_outputs}", leaf_ids[i])));
        }
    }
    // skl2onnx's binary layout (boosting for two classes): every vote goes to one score, the
    // second class's, with one base value for it.
    let one_score = leaf == "class" && n_outputs == 2 && leaf_ids.iter().all(|&c| c == 0);
    if !base_len_ok(floats(node, "base_values").len(), n_outputs, one_score) {
        return Err(bad(format!("base_values must have {n_outputs} values")));
    }
    Ok(())
}

fn base_len_ok(len: usize, n_outputs: usize, one_score: bool) -> bool {
    len == 0 || len == n_outputs || (one_score && len == 1)
}

/// Node counts of trees 0, 1, ..., from tree ids that start at 0 and grow by at most 1.
fn tree_sizes(ids: &[i64]) -> Result<Vec<usize>, String> {
    let mut sizes: Vec<usize> = Vec::new();
    for &t in ids {
        match sizes.len() as i64 {
            len if t == len => sizes.push(1),
            len if t == len - 1 => {
                if let Some(last) = sizes.last_mut() {
                    *last += 1;
                }
            }
            _ => {
                return Err(format!(
                    "tree id {t} breaks the order 0, 0, .., 1, .. (ids must start at 0 and grow by 1)"
                ));
            }
        }
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_outputs_must_name_a_value_of_the_graph() {
        use tract_onnx::pb::ValueInfoProto;
        let value = |name: &str| ValueInfoProto { name: name.into(), ..Default::default() };
        let mut g = GraphProto { input: vec![value("x")], output: vec![value("x")], ..Default::default() };
        assert!(outputs_are_defined(&g).is_ok());
        g.output = vec![value("y")];
        let e = outputs_are_defined(&g).unwrap_err().to_string();
        assert!(e.contains("graph output \"y\""), "{e}");
    }

    #[test]
    fn one_base_value_only_for_the_binary_one_score_layout() {
        assert!(base_len_ok(0, 3, false) && base_len_ok(3, 3, false) && base_len_ok(2, 2, true));
        assert!(base_len_ok(1, 2, true));
        assert!(!base_len_ok(1, 2, false) && !base_len_ok(1, 3, false) && !base_len_ok(3, 2, true));
    }

    #[test]
    fn tree_ids_must_start_at_zero_and_grow_by_one() {
        assert_eq!(tree_sizes(&[0, 0, 1, 1, 1, 2]).expect("ordered"), vec![2, 3, 1]);
        assert!(tree_sizes(&[1]).is_err());
        assert!(tree_sizes(&[0, 2]).is_err());
        assert!(tree_sizes(&[0, 1, 0]).is_err());
    }

    #[test]
    fn tensors_must_hold_what_they_declare() {
        let t = TensorProto { name: "w".into(), dims: vec![1 << 20, 1 << 20], data_type: 1, ..Default::default() };
        assert!(tensor(&t).expect_err("huge").to_string().contains("over"));
        let t =
            TensorProto { name: "w".into(), dims: vec![3], data_type: 1, float_data: vec![1.0], ..Default::default() };
        assert!(tensor(&t).expect_err("short").to_string().contains("does not hold"));
        let t =
            TensorProto { name: "w".into(), dims: vec![2], data_type: 1, raw_data: vec![0; 8], ..Default::default() };
        assert!(tensor(&t).is_ok());
        let t = TensorProto { name: "w".into(), data_location: Some(1), ..Default::default() };
        assert!(tensor(&t).expect_err("external").to_string().contains("external file"));
    }
}
