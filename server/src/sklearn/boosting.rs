//! Gradient boosting: GradientBoosting{Classifier,Regressor} (stages of regression trees over an
//! init estimator) and HistGradientBoosting{Classifier,Regressor} (TreePredictor nodes, with
//! their learned direction for missing values), summed and linked as scikit-learn does.

use ndarray::{Array2, ArrayView1, ArrayView2};

use super::SklearnError;
use super::linear::argmax;
use super::object::Obj;
use super::pickle::Node;
use super::tree::{Split, Tree, as_f32, split};

/// How raw predictions map to probabilities or values (`_loss.link`).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    Identity,
    Log,
    Logit,
    Multinomial,
}

/// One tree of a boosting stage.
#[derive(Debug, Clone)]
enum StageTree {
    /// A DecisionTreeRegressor of GradientBoosting (features compared as float32).
    Exact(Tree),
    /// A TreePredictor of HistGradientBoosting.
    Hist(HistTree),
}

/// A fitted boosting model: raw = init + scale × Σ stage trees, one column per tree of a stage.
#[derive(Debug, Clone)]
pub struct Boosting {
    init: Vec<f64>,
    /// `stages[i * columns + k]` is the tree of stage `i` for column `k`.
    stages: Vec<StageTree>,
    columns: usize,
    scale: f64,
    link: Link,
    /// HistGradientBoosting picks class 1 when raw > 0; GradientBoosting when raw >= 0.
    strict_binary: bool,
}

impl Boosting {
    /// GradientBoosting{Classifier,Regressor}; `n_classes` is 0 for regression.
    pub fn gradient(o: &Obj<'_>, n_features: usize, n_classes: usize) -> Result<Self, SklearnError> {
        let columns = o.usize("n_trees_per_iteration_")?;
        let link = link(o, n_classes, columns)?;
        let trees = o.items("estimators_")?;
        if columns == 0 || trees.is_empty() || trees.len() % columns != 0 {
            return Err(o.err(format!("estimators_ has {} trees, not stages of {columns}", trees.len())));
        }
        let stages = trees
            .iter()
            .map(|&id| Obj::at(o.p, id).and_then(|t| Tree::load(&t, n_features, 1)).map(StageTree::Exact))
            .collect::<Result<Vec<_>, _>>()?;
        let init = gradient_init(o, link, columns)?;
        let scale = o.vector("learning_rate", 1)?[0];
        Ok(Self { init, stages, columns, scale, link, strict_binary: false })
    }

    /// HistGradientBoosting{Classifier,Regressor}.
    pub fn hist(o: &Obj<'_>, n_features: usize, n_classes: usize) -> Result<Self, SklearnError> {
        if !matches!(o.get("_preprocessor"), None | Some(Node::None)) {
            return Err(o.err("categorical features (a fitted _preprocessor) are not supported"));
        }
        let columns = o.usize("n_trees_per_iteration_")?;
        let link = link(o, n_classes, columns)?;
        let init = o.vector("_baseline_prediction", columns)?;
        let mut stages = Vec::new();
        for &iteration in o.items("_predictors")? {
            let trees = match o.p.node(iteration) {
                Node::List(t) if t.len() == columns => t,
                _ => return Err(o.err(format!("each of _predictors must list {columns} trees"))),
            };
            for &t in trees {
                stages.push(StageTree::Hist(HistTree::load(&Obj::at(o.p, t)?, n_features)?));
            }
        }
        Ok(Self { init, stages, columns, scale: 1.0, link, strict_binary: true })
    }

    /// Raw predictions, one row per input row and `columns` columns.
    fn raw(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let mut out = Array2::zeros((x.nrows(), self.columns));
        let x32 = as_f32(x);
        let rows32 = x32.chunks_exact(x.ncols().max(1));
        for ((row, row32), mut o) in x.outer_iter().zip(rows32).zip(out.outer_iter_mut()) {
            for (o, b) in o.iter_mut().zip(&self.init) {
                *o = *b;
            }
            for stage in self.stages.chunks_exact(self.columns) {
                for (o, tree) in o.iter_mut().zip(stage) {
                    *o += self.scale * tree.value(row, row32);
                }
            }
        }
        out
    }

    /// Regression values.
    pub fn predict_values(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        let raw = self.raw(x);
        raw.iter().map(|&r| if self.link == Link::Log { r.exp() } else { r }).collect()
    }

    /// Class indices: the sign of the raw value for binary problems, else its argmax.
    pub fn predict_classes(&self, x: ArrayView2<'_, f64>) -> Vec<usize> {
        let raw = self.raw(x);
        raw.outer_iter()
            .map(|r| match r.as_slice() {
                Some([z]) if self.strict_binary => usize::from(*z > 0.0),
                Some([z]) => usize::from(*z >= 0.0),
                _ => argmax(r.iter().copied()),
            })
            .collect()
    }

    /// Class probabilities: logistic for binary problems, softmax otherwise.
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let raw = self.raw(x);
        let k = if self.columns == 1 { 2 } else { self.columns };
        let mut out = Array2::zeros((x.nrows(), k));
        for (r, mut o) in raw.outer_iter().zip(out.outer_iter_mut()) {
            if let (Some([z]), Some(o)) = (r.as_slice(), o.as_slice_mut()) {
                let p = 1.0 / (1.0 + (-z).exp());
                o.copy_from_slice(&[1.0 - p, p]);
            } else if let (Some(z), Some(o)) = (r.as_slice(), o.as_slice_mut()) {
                super::linear::softmax(z, o);
            }
        }
        out
    }

    /// Number of trees over all stages.
    pub fn n_trees(&self) -> usize {
        self.stages.len()
    }
}

impl StageTree {
    /// The tree's value for a row, given in float64 and float32 (GradientBoosting's precision).
    fn value(&self, row: ArrayView1<'_, f64>, row32: &[f32]) -> f64 {
        match self {
            Self::Exact(t) => t.leaf_values(row32).first().copied().unwrap_or(0.0),
            Self::Hist(t) => t.value(row),
        }
    }
}

/// The link of `_loss`, checked against the task.
fn link(o: &Obj<'_>, n_classes: usize, columns: usize) -> Result<Link, SklearnError> {
    let loss = o.obj("_loss")?;
    let link = match loss.obj("link")?.class {
        "IdentityLink" => Link::Identity,
        "LogLink" => Link::Log,
        "LogitLink" => Link::Logit,
        "MultinomialLogit" => Link::Multinomial,
        other => return Err(o.err(format!("loss {} with link {other} is not supported", loss.class))),
    };
    let ok = match link {
        Link::Identity | Link::Log => n_classes == 0 && columns == 1,
        Link::Logit => n_classes == 2 && columns == 1,
        Link::Multinomial => n_classes > 2 && columns == n_classes,
    };
    if !ok {
        return Err(
            o.err(format!("loss {} does not fit {n_classes} classes and {columns} trees per stage", loss.class))
        );
    }
    Ok(link)
}

/// GradientBoosting's raw prediction before the first stage: the init estimator through the link.
fn gradient_init(o: &Obj<'_>, link: Link, columns: usize) -> Result<Vec<f64>, SklearnError> {
    if let Some(Node::Str(s)) = o.get("init_") {
        return if s == "zero" { Ok(vec![0.0; columns]) } else { Err(o.err(format!("init_={s:?} is not supported"))) };
    }
    let init = o.obj("init_")?;
    match (init.class, link) {
        ("DummyRegressor", Link::Identity) => init.vector("constant_", 1),
        ("DummyClassifier", Link::Logit | Link::Multinomial) => {
            if init.str("strategy")? != "prior" {
                return Err(init.err("only strategy=\"prior\" is supported as GradientBoosting's init"));
            }
            let n = if columns == 1 { 2 } else { columns };
            let eps = f64::EPSILON;
            let prior: Vec<f64> = init.vector("class_prior_", n)?.iter().map(|p| p.clamp(eps, 1.0 - eps)).collect();
            if link == Link::Logit {
                let p = prior[1];
                Ok(vec![(p / (1.0 - p)).ln()])
            } else {
                // log(p / geometric mean of p)
                let gm = (prior.iter().map(|p| p.ln()).sum::<f64>() / n as f64).exp();
                Ok(prior.iter().map(|p| (p / gm).ln()).collect())
            }
        }
        (other, _) => Err(o.err(format!("init estimator {other} is not supported"))),
    }
}

/// A HistGradientBoosting TreePredictor node: a leaf value, or a split.
#[derive(Debug, Clone)]
enum HistNode {
    Leaf(f64),
    Split(Split),
}

/// A HistGradientBoosting tree: numeric splits, NaN sent where training saw it go.
#[derive(Debug, Clone)]
struct HistTree {
    nodes: Vec<HistNode>,
}

impl HistTree {
    fn load(p: &Obj<'_>, n_features: usize) -> Result<Self, SklearnError> {
        let Node::Array(a) = p.req("nodes")? else {
            return Err(p.err("nodes must be an array"));
        };
        let n = a.len();
        p.p.charge(n.saturating_mul(8)).map_err(|e| p.err(e))?;
        let f = |name: &str| a.field_f64(name).map_err(|e| p.err(format!("nodes: {e}")));
        let i = |name: &str| a.field_i64(name).map_err(|e| p.err(format!("nodes: {e}")));
        let (value, threshold) = (f("value")?, f("num_threshold")?);
        let (feature, left, right) = (i("feature_idx")?, i("left")?, i("right")?);
        let (leaf, missing, categorical) = (i("is_leaf")?, i("missing_go_to_left")?, i("is_categorical")?);
        if n == 0 {
            return Err(p.err("the tree has no nodes"));
        }
        let mut nodes = Vec::with_capacity(n);
        for j in 0..n {
            let node = if leaf[j] != 0 {
                HistNode::Leaf(value[j])
            } else {
                if categorical[j] != 0 {
                    return Err(p.err("categorical splits are not supported"));
                }
                let (left, right, feature) =
                    split(j, n, (left[j], right[j]), feature[j], n_features).map_err(|e| p.err(e))?;
                HistNode::Split(Split { feature, threshold: threshold[j], missing_left: missing[j] != 0, left, right })
            };
            nodes.push(node);
        }
        Ok(Self { nodes })
    }

    fn value(&self, row: ArrayView1<'_, f64>) -> f64 {
        let mut i = 0;
        // Children have larger indices (checked at load): at most nodes.len() steps.
        loop {
            match self.nodes.get(i) {
                Some(HistNode::Split(s)) => i = s.next(row.get(s.feature as usize).copied().unwrap_or(f64::NAN)),
                Some(HistNode::Leaf(v)) => return *v,
                None => return 0.0,
            }
        }
    }
}
