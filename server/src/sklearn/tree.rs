//! Decision trees and forests of them (RandomForest, ExtraTrees), read from `sklearn.tree._tree.Tree`
//! state and checked at load so traversal can never index out of range or loop.
//!
//! Nodes are 16 bytes with float32 thresholds (scikit-learn compares float32 features), a leaf's
//! children are the leaf itself, and walks go several lanes at once (eight trees for one row, or
//! eight rows down one tree): each step is a select rather than a branch that mispredicts half the
//! time, and the lanes' independent loads overlap.

use ndarray::{Array2, ArrayView2};

use super::SklearnError;
use super::linear::argmax;
use super::object::{Obj, numbers};
use super::pickle::Node as PickleNode;

/// A float64 split (HistGradientBoosting's): `x <= threshold` goes left, NaN goes where training
/// sent missing values.
#[derive(Debug, Clone)]
pub(super) struct Split {
    pub threshold: f64,
    pub feature: u32,
    /// Child indices, both greater than the node's own (checked at load), so walks end.
    pub left: u32,
    pub right: u32,
    pub missing_left: bool,
}

impl Split {
    /// The child `x` goes to.
    pub fn next(&self, x: f64) -> usize {
        let next = if x.is_nan() {
            if self.missing_left { self.left } else { self.right }
        } else if x <= self.threshold {
            self.left
        } else {
            self.right
        };
        next as usize
    }
}

/// Rows as float32, the precision scikit-learn's trees compare features in.
pub(super) fn as_f32(x: ArrayView2<'_, f64>) -> Vec<f32> {
    x.iter().map(|&v| v as f32).collect()
}

/// Checks a node's children (`i < child < count`) and feature index, giving its split.
pub(super) fn split(
    i: usize,
    count: usize,
    (left, right): (i64, i64),
    feature: i64,
    n_features: usize,
) -> Result<(u32, u32, u32), String> {
    let child = |c: i64| usize::try_from(c).ok().filter(|&c| c > i && c < count).and_then(|c| u32::try_from(c).ok());
    let (Some(l), Some(r)) = (child(left), child(right)) else {
        return Err(format!("node {i} has child indices {left} and {right}, outside {}..{count}", i + 1));
    };
    let f = usize::try_from(feature)
        .ok()
        .filter(|&f| f < n_features && f < NAN_LEFT as usize)
        .and_then(|f| u32::try_from(f).ok())
        .ok_or_else(|| format!("node {i} splits on feature {feature}, the model has {n_features} features"))?;
    Ok((l, r, f))
}

/// Bit of [`Node::feature`] set when NaN goes left.
const NAN_LEFT: u32 = 1 << 31;

/// How many walks go down together.
const LANES: usize = 8;

/// A split, or a leaf (whose children are itself).
#[derive(Debug, Clone, Copy)]
struct Node {
    /// The largest float32 not above scikit-learn's float64 threshold: for a float32 feature `x`,
    /// `x <= threshold` is then exactly scikit-learn's `x <= (double) threshold`.
    threshold: f32,
    /// The feature index, with [`NAN_LEFT`].
    feature: u32,
    /// Left and right.
    children: [u32; 2],
}

impl Node {
    fn leaf(i: u32) -> Self {
        Self { threshold: 0.0, feature: 0, children: [i, i] }
    }

    fn split(threshold: f64, feature: u32, (left, right): (u32, u32), missing_left: bool) -> Self {
        Self {
            threshold: f32_at_most(threshold),
            feature: feature | if missing_left { NAN_LEFT } else { 0 },
            children: [left, right],
        }
    }

    /// The node `row` goes to next (itself at a leaf).
    #[inline(always)]
    fn next(&self, row: &[f32]) -> u32 {
        let x = row.get((self.feature & !NAN_LEFT) as usize).copied().unwrap_or(f32::NAN);
        let left = (x <= self.threshold) | (x.is_nan() & (self.feature & NAN_LEFT != 0));
        self.children[usize::from(!left)]
    }
}

/// The largest float32 not above `t` (NaN stays NaN).
fn f32_at_most(t: f64) -> f32 {
    let r = t as f32;
    if f64::from(r) > t { r.next_down() } else { r }
}

/// Walks `K` lanes (a start node and a row each) to their leaves together. Children have larger
/// indices than their parent (checked at load) and leaves point to themselves, so every lane
/// stops moving within `nodes.len()` steps.
#[inline]
fn leaves<const K: usize>(nodes: &[Node], mut at: [u32; K], rows: [&[f32]; K]) -> [u32; K] {
    loop {
        let mut moved = false;
        for (a, row) in at.iter_mut().zip(rows) {
            let next = nodes.get(*a as usize).map_or(*a, |n| n.next(row));
            moved |= next != *a;
            *a = next;
        }
        if !moved {
            return at;
        }
    }
}

/// The leaves of lanes `0..n` (`lane(i)` gives a lane's start node and row), handed to `f` in lane
/// order.
fn each_leaf<'r>(nodes: &[Node], n: usize, lane: impl Fn(usize) -> (u32, &'r [f32]), mut f: impl FnMut(usize, u32)) {
    for base in (0..n).step_by(LANES) {
        // A short last group repeats its last lane, whose extra results are dropped.
        let group: [(u32, &[f32]); LANES] = std::array::from_fn(|k| lane((base + k).min(n - 1)));
        let at = leaves(nodes, group.map(|l| l.0), group.map(|l| l.1));
        for (k, &leaf) in at.iter().enumerate().take(n - base) {
            f(base + k, leaf);
        }
    }
}

/// A fitted tree: nodes and, per node, `n_values` values (class weights, or one regression value).
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<Node>,
    values: Vec<f64>,
    /// `values` divided by each node's sum (as predict_proba divides), computed once at load.
    proba: Vec<f64>,
    n_values: usize,
}

impl Tree {
    /// Reads the `tree_` of a DecisionTree*/ExtraTree* estimator. `n_values` is the number of
    /// classes (1 for regression).
    pub fn load(est: &Obj<'_>, n_features: usize, n_values: usize) -> Result<Self, SklearnError> {
        let t = est.obj("tree_")?;
        let bad = |m: String| Err(t.err(m));
        // Tree(n_features, n_classes, n_outputs).
        let arg = |i: usize| t.args.get(i).map(|&id| t.p.node(id));
        match (arg(0), arg(2)) {
            (Some(PickleNode::Int(f)), Some(PickleNode::Int(1))) if usize::try_from(*f).ok() == Some(n_features) => {}
            (_, Some(PickleNode::Int(1))) => return bad(format!("the tree does not have {n_features} features")),
            _ => return bad("only single-output trees are supported".into()),
        }
        let count = t.usize("node_count")?;
        let PickleNode::Array(nodes) = t.req("nodes")? else {
            return bad("nodes must be an array".into());
        };
        if nodes.shape != [count] {
            return bad(format!("nodes has shape {:?}, node_count is {count}", nodes.shape));
        }
        if u32::try_from(count).is_err() {
            return bad(format!("the tree has {count} nodes, more than 2^32"));
        }
        t.p.charge(count.saturating_mul(6)).map_err(|e| t.err(e))?;
        let field = |name: &str| nodes.field_i64(name).map_err(|e| t.err(format!("nodes: {e}")));
        let (left, right, feature) = (field("left_child")?, field("right_child")?, field("feature")?);
        let threshold = nodes.field_f64("threshold").map_err(|e| t.err(format!("nodes: {e}")))?;
        // Trees from scikit-learn before 1.3 have no missing-value field: NaN then goes right.
        let missing = nodes.field_i64("missing_go_to_left").unwrap_or_else(|_| vec![0; count]);
        let (vshape, values) = numbers(t.p, t.req("values")?).map_err(|e| t.err(format!("values: {e}")))?;
        if vshape != [count, 1, n_values] {
            return bad(format!("values has shape {vshape:?}, expected [{count}, 1, {n_values}]"));
        }
        if count == 0 {
            return bad("the tree has no nodes".into());
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let node = if left[i] == -1 {
                if right[i] != -1 {
                    return bad(format!("node {i} has a right child {} but no left child", right[i]));
                }
                Node::leaf(i as u32)
            } else {
                let (left, right, feature) =
                    split(i, count, (left[i], right[i]), feature[i], n_features).map_err(|e| t.err(e))?;
                Node::split(threshold[i], feature, (left, right), missing[i] != 0)
            };
            out.push(node);
        }
        let mut proba = values.clone();
        for v in proba.chunks_exact_mut(n_values.max(1)) {
            let s: f64 = v.iter().sum();
            let s = if s == 0.0 { 1.0 } else { s };
            v.iter_mut().for_each(|v| *v /= s);
        }
        Ok(Self { nodes: out, values, proba, n_values })
    }

    /// The leaf's values (class weights, or the regression value) for `row` (see [`as_f32`]).
    pub(super) fn leaf_values(&self, row: &[f32]) -> &[f64] {
        let [i] = leaves(&self.nodes, [0], [row]);
        let i = i as usize;
        self.values.get(i * self.n_values..(i + 1) * self.n_values).unwrap_or_default()
    }
}

/// One tree (a DecisionTree*) or a forest, predicting as scikit-learn does: the trees' nodes in
/// one array, each tree's indices offset by where it starts.
#[derive(Debug, Clone)]
pub struct Trees {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    values: Vec<f64>,
    proba: Vec<f64>,
    n_values: usize,
    /// A lone DecisionTree predicts from its raw leaf values rather than averaged probabilities.
    single: bool,
}

impl Trees {
    /// A DecisionTree{Classifier,Regressor}.
    pub fn single(o: &Obj<'_>, n_features: usize, n_values: usize) -> Result<Self, SklearnError> {
        Self::join(o, vec![Tree::load(o, n_features, n_values)?], n_values, true)
    }

    /// A RandomForest / ExtraTrees: every tree of `estimators_`.
    pub fn forest(o: &Obj<'_>, n_features: usize, n_values: usize) -> Result<Self, SklearnError> {
        let trees = o
            .items("estimators_")?
            .iter()
            .map(|&id| Obj::at(o.p, id).and_then(|e| Tree::load(&e, n_features, n_values)))
            .collect::<Result<Vec<_>, _>>()?;
        if trees.is_empty() {
            return Err(o.err("the forest has no trees"));
        }
        Self::join(o, trees, n_values, false)
    }

    fn join(o: &Obj<'_>, trees: Vec<Tree>, n_values: usize, single: bool) -> Result<Self, SklearnError> {
        let total: usize = trees.iter().map(|t| t.nodes.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(o.err(format!("the trees have {total} nodes in all, more than 2^32")));
        }
        let mut out = Self {
            nodes: Vec::with_capacity(total),
            roots: Vec::with_capacity(trees.len()),
            values: Vec::with_capacity(total * n_values),
            proba: Vec::with_capacity(total * n_values),
            n_values,
            single,
        };
        for t in trees {
            // Fits in u32: checked above.
            let at = out.nodes.len() as u32;
            out.roots.push(at);
            out.nodes.extend(t.nodes.iter().map(|n| Node { children: n.children.map(|c| c + at), ..*n }));
            out.values.extend_from_slice(&t.values);
            out.proba.extend_from_slice(&t.proba);
        }
        Ok(out)
    }

    /// Every (row, leaf) pair, each row's leaves in tree order. Many rows go eight at a time down
    /// one tree after another (one tree in cache at a time); a few rows go down eight trees at a time.
    fn each_leaf(&self, x32: &[f32], n_features: usize, mut f: impl FnMut(usize, usize)) {
        let rows: Vec<&[f32]> = x32.chunks_exact(n_features.max(1)).collect();
        if rows.len() >= LANES {
            for &root in &self.roots {
                each_leaf(&self.nodes, rows.len(), |r| (root, rows[r]), |r, leaf| f(r, leaf as usize));
            }
        } else {
            for (r, &row) in rows.iter().enumerate() {
                each_leaf(&self.nodes, self.roots.len(), |t| (self.roots[t], row), |_, leaf| f(r, leaf as usize));
            }
        }
    }

    /// Divides sums over the trees by their count, as a forest averages.
    fn average<'a>(&self, sums: impl Iterator<Item = &'a mut f64>) {
        if !self.single {
            let n = self.roots.len() as f64;
            sums.for_each(|o| *o /= n);
        }
    }

    /// Regression: the mean of the trees' leaf values (summed tree by tree, as scikit-learn does).
    pub fn predict_values(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        let mut out = vec![0.0; x.nrows()];
        self.each_leaf(&as_f32(x), x.ncols(), |r, leaf| out[r] += self.values.get(leaf).copied().unwrap_or(0.0));
        self.average(out.iter_mut());
        out
    }

    /// Classification: each tree's normalised leaf weights, summed over trees, divided by their count.
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let nv = self.n_values;
        let mut out = Array2::zeros((x.nrows(), nv));
        self.each_leaf(&as_f32(x), x.ncols(), |r, leaf| {
            let p = self.proba.get(leaf * nv..(leaf + 1) * nv).unwrap_or_default();
            for (o, p) in out.row_mut(r).iter_mut().zip(p) {
                *o += p;
            }
        });
        self.average(out.iter_mut());
        out
    }

    /// Class indices: argmax of a lone tree's leaf weights, or of the averaged probabilities.
    pub fn predict_classes(&self, x: ArrayView2<'_, f64>) -> Vec<usize> {
        if !self.single {
            return self.predict_proba(x).outer_iter().map(|r| argmax(r.iter().copied())).collect();
        }
        let nv = self.n_values;
        let mut out = vec![0; x.nrows()];
        self.each_leaf(&as_f32(x), x.ncols(), |r, leaf| {
            out[r] = argmax(self.values.get(leaf * nv..(leaf + 1) * nv).unwrap_or_default().iter().copied());
        });
        out
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }

    /// Number of nodes over all trees.
    pub fn n_nodes(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_thresholds_compare_as_scikit_learn_does() {
        // scikit-learn compares a float32 feature, widened, with a float64 threshold.
        for t in [0.1, -0.1, 1.0 / 3.0, 2.5, 1e-40, -1e-40, 3.5e38, 1e300, -1e300, f64::INFINITY, f64::NEG_INFINITY] {
            let t32 = f32_at_most(t);
            let near = f64::from(t as f32);
            for x in [t as f32, (t as f32).next_up(), (t as f32).next_down(), near as f32, 0.0, f32::MAX, f32::MIN] {
                assert_eq!(x <= t32, f64::from(x) <= t, "x {x:e} threshold {t:e}");
            }
        }
    }

    #[test]
    fn lanes_walk_to_the_leaves_a_single_walk_reaches() {
        // x0 <= 0.5 ? (x1 <= 2 ? leaf 2 : leaf 3) : leaf 4; NaN in x0 goes left.
        let nodes = vec![
            Node::split(0.5, 0, (1, 4), true),
            Node::split(2.0, 1, (2, 3), false),
            Node::leaf(2),
            Node::leaf(3),
            Node::leaf(4),
        ];
        let rows: [&[f32]; 5] = [&[0.0, 1.0], &[0.0, 3.0], &[1.0, 0.0], &[f32::NAN, 5.0], &[0.5, f32::NAN]];
        let expected = [2, 3, 4, 3, 3];
        let mut seen = Vec::new();
        each_leaf(&nodes, rows.len(), |r| (0, rows[r]), |r, leaf| seen.push((r, leaf)));
        assert_eq!(seen, expected.iter().copied().enumerate().collect::<Vec<_>>());
        // A lane may start anywhere: from node 1 the first split is skipped.
        let mut from_one = Vec::new();
        each_leaf(&nodes, 1, |_| (1, rows[2]), |_, leaf| from_one.push(leaf));
        assert_eq!(from_one, [2]);
    }
}
