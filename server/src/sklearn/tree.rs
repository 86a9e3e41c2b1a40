//! Decision trees and forests of them (RandomForest, ExtraTrees), read from `sklearn.tree._tree.Tree`
//! state and checked at load so traversal can never index out of range or loop.

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::SklearnError;
use super::linear::argmax;
use super::object::{Obj, numbers};
use super::pickle::Node;

/// A split: `x <= threshold` goes left, NaN goes where training sent missing values.
#[derive(Debug, Clone)]
pub(super) struct Split {
    pub feature: usize,
    pub threshold: f64,
    pub missing_left: bool,
    /// Child indices, both greater than the node's own (checked at load), so walks end.
    pub left: usize,
    pub right: usize,
}

impl Split {
    pub fn next(&self, x: f64) -> usize {
        if x.is_nan() {
            if self.missing_left { self.left } else { self.right }
        } else if x <= self.threshold {
            self.left
        } else {
            self.right
        }
    }
}

/// Checks a node's children (`i < child < count`) and feature index, giving its split.
pub(super) fn split(
    i: usize,
    count: usize,
    (left, right): (i64, i64),
    feature: i64,
    n_features: usize,
) -> Result<(usize, usize, usize), String> {
    let child = |c: i64| usize::try_from(c).ok().filter(|&c| c > i && c < count);
    let (Some(l), Some(r)) = (child(left), child(right)) else {
        return Err(format!("node {i} has child indices {left} and {right}, outside {}..{count}", i + 1));
    };
    let f = usize::try_from(feature)
        .ok()
        .filter(|&f| f < n_features)
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
        Ok(Self { nodes: out, values, n_values })
    }

    /// The leaf `row` falls into. scikit-learn compares features as float32.
    pub(super) fn leaf_values(&self, row: ArrayView1<'_, f64>) -> &[f64] {
        let mut i = 0;
        // Children have larger indices (checked at load): at most nodes.len() steps.
        while let Some(Some(s)) = self.nodes.get(i) {
            i = s.next(f64::from(row.get(s.feature).copied().unwrap_or(f64::NAN) as f32));
        }
        self.values.get(i * self.n_values..(i + 1) * self.n_values).unwrap_or_default()
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
    pub fn single(o: &Obj<'_>, n_features: usize, n_values: usize) -> Result<Self, SklearnError> {
        Ok(Self { trees: vec![Tree::load(o, n_features, n_values)?], n_values, single: true })
    }

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

    /// Regression: the mean of the trees' leaf values.
    pub fn predict_values(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        let n = self.trees.len() as f64;
        x.outer_iter()
            .map(|row| {
                let sum: f64 = self.trees.iter().map(|t| t.leaf_values(row).first().copied().unwrap_or(0.0)).sum();
                if self.single { sum } else { sum / n }
            })
            .collect()
    }

    /// Classification: each tree's leaf weights normalised, summed over trees, divided by their count.
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let k = self.n_values;
        let mut out = Array2::zeros((x.nrows(), k));
        for (row, mut o) in x.outer_iter().zip(out.outer_iter_mut()) {
            for t in &self.trees {
                let v = t.leaf_values(row);
                let s: f64 = v.iter().sum();
                let s = if s == 0.0 { 1.0 } else { s };
                for (o, v) in o.iter_mut().zip(v) {
                    *o += v / s;
                }
            }
            if !self.single {
                let n = self.trees.len() as f64;
                o.iter_mut().for_each(|o| *o /= n);
            }
        }
        out
    }

    pub fn predict_classes(&self, x: ArrayView2<'_, f64>) -> Vec<usize> {
        if let (true, Some(t)) = (self.single, self.trees.first()) {
            return x.outer_iter().map(|row| argmax(t.leaf_values(row).iter().copied())).collect();
        }
        self.predict_proba(x).outer_iter().map(|r| argmax(r.iter().copied())).collect()
    }

    pub fn n_trees(&self) -> usize {
        self.trees.len()
    }

    pub fn n_nodes(&self) -> usize {
        self.trees.iter().map(|t| t.nodes.len()).sum()
    }
}
