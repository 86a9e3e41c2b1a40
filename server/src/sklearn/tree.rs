//! Decision trees and forests of them (RandomForest, ExtraTrees), read from `sklearn.tree._tree.Tree`
//! state and checked at load so traversal can never index out of range or loop.

use ndarray::{Array2, ArrayView2};

use super::SklearnError;
use super::linear::argmax;
use super::object::{Obj, numbers};
use super::pickle::Node;

/// A split: `x <= threshold` goes left, NaN goes where training sent missing values. 24 bytes,
/// so a tree's nodes stay in cache.
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
        .filter(|&f| f < n_features)
        .and_then(|f| u32::try_from(f).ok())
        .ok_or_else(|| format!("node {i} splits on feature {feature}, the model has {n_features} features"))?;
    Ok((l, r, f))
}

/// One node: a leaf (None) or a split.
type TreeNode = Option<Split>;

/// A fitted tree: nodes and, per node, `n_values` values (class weights, or one regression value).
#[derive(Debug, Clone)]
pub struct Tree {
    nodes: Vec<TreeNode>,
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
            (Some(Node::Int(f)), Some(Node::Int(1))) if usize::try_from(*f).ok() == Some(n_features) => {}
            (_, Some(Node::Int(1))) => return bad(format!("the tree does not have {n_features} features")),
            _ => return bad("only single-output trees are supported".into()),
        }
        let count = t.usize("node_count")?;
        let Node::Array(nodes) = t.req("nodes")? else {
            return bad("nodes must be an array".into());
        };
        if nodes.shape != [count] {
            return bad(format!("nodes has shape {:?}, node_count is {count}", nodes.shape));
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
                None
            } else {
                let (left, right, feature) =
                    split(i, count, (left[i], right[i]), feature[i], n_features).map_err(|e| t.err(e))?;
                Some(Split { feature, threshold: threshold[i], missing_left: missing[i] != 0, left, right })
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

    /// The leaf `row` (see [`as_f32`]) falls into.
    fn leaf(&self, row: &[f32]) -> usize {
        let mut i = 0;
        // Children have larger indices (checked at load): at most nodes.len() steps.
        while let Some(Some(s)) = self.nodes.get(i) {
            i = s.next(row.get(s.feature as usize).map_or(f64::NAN, |&v| f64::from(v)));
        }
        i
    }

    /// The leaf's values (class weights, or the regression value).
    pub(super) fn leaf_values(&self, row: &[f32]) -> &[f64] {
        let i = self.leaf(row);
        self.values.get(i * self.n_values..(i + 1) * self.n_values).unwrap_or_default()
    }

    /// The leaf's class probabilities.
    fn leaf_proba(&self, row: &[f32]) -> &[f64] {
        let i = self.leaf(row);
        self.proba.get(i * self.n_values..(i + 1) * self.n_values).unwrap_or_default()
    }
}

/// One tree (a DecisionTree*) or a forest, predicting as scikit-learn does.
#[derive(Debug, Clone)]
pub struct Trees {
    trees: Vec<Tree>,
    n_values: usize,
    /// A lone DecisionTree predicts from its raw leaf values rather than averaged probabilities.
    single: bool,
}

impl Trees {
    /// A DecisionTree{Classifier,Regressor}.
    pub fn single(o: &Obj<'_>, n_features: usize, n_values: usize) -> Result<Self, SklearnError> {
        Ok(Self { trees: vec![Tree::load(o, n_features, n_values)?], n_values, single: true })
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
        Ok(Self { trees, n_values, single: false })
    }

    /// Regression: the mean of the trees' leaf values (summed tree by tree, as scikit-learn does).
    pub fn predict_values(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        let mut out = vec![0.0; x.nrows()];
        let x32 = as_f32(x);
        // Tree by tree over all rows keeps one tree in cache at a time; each row's sum is in tree order.
        for t in &self.trees {
            for (row, o) in x32.chunks_exact(x.ncols().max(1)).zip(out.iter_mut()) {
                *o += t.leaf_values(row).first().copied().unwrap_or(0.0);
            }
        }
        if !self.single {
            let n = self.trees.len() as f64;
            out.iter_mut().for_each(|o| *o /= n);
        }
        out
    }

    /// Classification: each tree's normalised leaf weights, summed over trees, divided by their count.
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let mut out = Array2::zeros((x.nrows(), self.n_values));
        let x32 = as_f32(x);
        for t in &self.trees {
            for (row, mut o) in x32.chunks_exact(x.ncols().max(1)).zip(out.outer_iter_mut()) {
                for (o, p) in o.iter_mut().zip(t.leaf_proba(row)) {
                    *o += p;
                }
            }
        }
        if !self.single {
            let n = self.trees.len() as f64;
            out.iter_mut().for_each(|o| *o /= n);
        }
        out
    }

    /// Class indices: argmax of a lone tree's leaf weights, or of the averaged probabilities.
    pub fn predict_classes(&self, x: ArrayView2<'_, f64>) -> Vec<usize> {
        if let (true, Some(t)) = (self.single, self.trees.first()) {
            let x32 = as_f32(x);
            return x32.chunks_exact(x.ncols().max(1)).map(|row| argmax(t.leaf_values(row).iter().copied())).collect();
        }
        self.predict_proba(x).outer_iter().map(|r| argmax(r.iter().copied())).collect()
    }

    /// Number of trees.
    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    /// Number of nodes over all trees.
    pub fn n_nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}
