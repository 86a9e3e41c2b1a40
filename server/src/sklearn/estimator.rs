//! From a pickled estimator (or a Pipeline of them) to a [`Fitted`] model: the transformers in
//! order, then one predictor, with every width checked against the next step's.

use ndarray::{Array2, ArrayView2};

use super::SklearnError;
use super::boosting::Boosting;
use super::globals;
use super::linear::{LinearClassifier, LinearRegressor, Proba};
use super::object::{Label, Obj};
use super::pickle::{Node, NodeId, Pickle};
use super::preprocessing::{Missing, Transform};
use super::tree::Trees;

/// Pipelines nested deeper than this are refused (a pickle could make one contain itself).
const MAX_PIPELINE_DEPTH: usize = 8;

/// The final step of a model.
#[derive(Debug, Clone)]
pub enum Predictor {
    Linear(LinearRegressor),
    LinearClassifier(LinearClassifier),
    TreeRegressor(Trees),
    TreeClassifier(Trees),
    BoostingRegressor(Boosting),
    BoostingClassifier(Boosting),
}

/// A fitted model: transformers, then a predictor.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// Class of the pickled object (e.g. `Pipeline`, `RandomForestClassifier`).
    pub class: &'static str,
    /// Classes of the steps, in order.
    pub steps: Vec<&'static str>,
    pub transforms: Vec<Transform>,
    pub predictor: Predictor,
    pub n_features: usize,
    pub feature_names: Option<Vec<String>>,
    /// `classes_` of a classifier; empty for regression.
    pub classes: Vec<Label>,
    /// The scikit-learn version that pickled the model (`_sklearn_version`).
    pub sklearn_version: Option<String>,
    /// Whether the predictor itself takes NaN in `predict` (see [`predictor_takes_nan`]).
    predictor_takes_nan: bool,
}

impl Fitted {
    /// Reads the model the pickle returns.
    pub fn from_pickle(p: &Pickle) -> Result<Self, SklearnError> {
        let top = Obj::at(p, p.root)?;
        let mut steps = Vec::new();
        flatten(p, p.root, &mut steps, 0)?;
        let Some((last, firsts)) = steps.split_last() else {
            return Err(top.err("the pipeline has no steps"));
        };
        let first = steps.first().copied().unwrap_or(*last);
        let n_features = first.usize("n_features_in_")?;
        let feature_names = match top.feature_names()? {
            Some(n) => Some(n),
            None => first.feature_names()?,
        };
        if feature_names.as_ref().is_some_and(|n| n.len() != n_features) {
            return Err(first.err("feature_names_in_ and n_features_in_ disagree"));
        }
        let mut width = n_features;
        let mut transforms = Vec::new();
        for step in firsts {
            check_width(step, width)?;
            let t = Transform::load(step, width)?;
            width = t.n_out(width);
            transforms.push(t);
        }
        check_width(last, width)?;
        let (predictor, classes) = predictor(last, width)?;
        let predictor_takes_nan = predictor_takes_nan(last);
        Ok(Self {
            class: top.class,
            steps: steps.iter().map(|s| s.class).collect(),
            transforms,
            predictor,
            n_features,
            feature_names,
            classes,
            sklearn_version: top.str("_sklearn_version").ok().map(str::to_string),
            predictor_takes_nan,
        })
    }

    /// Runs the transformers over `x` (which has `n_features` columns).
    pub fn transform(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        self.transforms.iter().fold(x.to_owned(), |x, t| t.apply(x))
    }

    /// Whether NaN inputs mean "missing" as scikit-learn allows here: a SimpleImputer of NaN
    /// fills them (the scalers before it keep NaN, as scikit-learn's do), or the predictor routes
    /// them down a learned branch (HistGradientBoosting, and trees where the scikit-learn version
    /// that pickled them does).
    pub fn handles_nan(&self) -> bool {
        self.transforms.iter().any(|t| matches!(t, Transform::Impute { missing: Missing::Nan, .. }))
            || self.predictor_takes_nan
    }

    /// Whether the final estimator has `predict_proba`.
    pub fn has_proba(&self) -> bool {
        match &self.predictor {
            Predictor::LinearClassifier(c) => c.proba != Proba::Unavailable,
            Predictor::TreeClassifier(_) | Predictor::BoostingClassifier(_) => true,
            Predictor::Linear(_) | Predictor::TreeRegressor(_) | Predictor::BoostingRegressor(_) => false,
        }
    }
}

/// Whether scikit-learn's `predict` takes NaN for this final estimator, in the version that
/// pickled it (`_sklearn_version`; unknown: no), as measured with scikit-learn 1.5 to 1.9:
/// HistGradientBoosting always; decision trees from 1.3 with the best splitter (random from 1.6),
/// random forests from 1.4, extra trees from 1.6; before 1.9 only for the criteria below and
/// without `monotonic_cst`, from 1.9 for every criterion. GradientBoosting never does.
fn predictor_takes_nan(o: &Obj<'_>) -> bool {
    if o.class.starts_with("HistGradientBoosting") {
        return true;
    }
    let since = match o.class {
        "DecisionTreeClassifier" | "DecisionTreeRegressor" => match o.str("splitter") {
            Ok("best") => (1, 3),
            Ok("random") => (1, 6),
            _ => return false,
        },
        "RandomForestClassifier" | "RandomForestRegressor" => (1, 4),
        "ExtraTreesClassifier" | "ExtraTreesRegressor" => (1, 6),
        _ => return false,
    };
    let Some(version) = o.str("_sklearn_version").ok().and_then(minor_version) else {
        return false;
    };
    if version < since {
        return false;
    }
    const CRITERIA: [&str; 6] = ["gini", "log_loss", "entropy", "squared_error", "friedman_mse", "poisson"];
    version >= (1, 9)
        || (o.str("criterion").is_ok_and(|c| CRITERIA.contains(&c))
            && matches!(o.get("monotonic_cst"), None | Some(Node::None)))
}

/// `(major, minor)` of a version string such as `1.6.1` or `1.7.dev0`.
fn minor_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts.next()?.chars().take_while(char::is_ascii_digit).collect();
    Some((major, minor.parse().ok()?))
}

/// Collects the estimators of a (possibly nested) Pipeline, skipping `None` / `"passthrough"`.
fn flatten<'p>(p: &'p Pickle, id: NodeId, out: &mut Vec<Obj<'p>>, depth: usize) -> Result<(), SklearnError> {
    let o = Obj::at(p, id)?;
    if o.class != "Pipeline" {
        if !globals::is_estimator(o.class) {
            return Err(SklearnError::Unsupported { class: o.class.to_string(), supported: globals::supported_list() });
        }
        out.push(o);
        return Ok(());
    }
    if depth >= MAX_PIPELINE_DEPTH {
        return Err(o.err("pipelines nested too deeply"));
    }
    for &step in o.items("steps")? {
        let est = match p.node(step) {
            Node::Tuple(pair) if pair.len() == 2 => pair[1],
            _ => return Err(o.err("steps must be (name, estimator) pairs")),
        };
        match p.node(est) {
            Node::None => {}
            Node::Str(s) if s == "passthrough" => {}
            _ => flatten(p, est, out, depth + 1)?,
        }
    }
    Ok(())
}

fn check_width(o: &Obj<'_>, width: usize) -> Result<(), SklearnError> {
    match o.usize("n_features_in_") {
        Ok(n) if n == width => Ok(()),
        Ok(n) => Err(o.err(format!("expects {n} features, the previous step gives {width}"))),
        Err(e) => Err(e),
    }
}

/// Reads the final estimator and its classes.
fn predictor(o: &Obj<'_>, n: usize) -> Result<(Predictor, Vec<Label>), SklearnError> {
    let classes = || o.labels("classes_");
    Ok(match o.class {
        "LinearRegression" | "Ridge" | "Lasso" | "ElasticNet" | "SGDRegressor" => {
            (Predictor::Linear(LinearRegressor::load(o, n)?), Vec::new())
        }
        "LogisticRegression" => {
            let c = classes()?;
            (Predictor::LinearClassifier(LinearClassifier::logistic(o, n, c.len())?), c)
        }
        "SGDClassifier" => {
            let c = classes()?;
            (Predictor::LinearClassifier(LinearClassifier::sgd(o, n, c.len())?), c)
        }
        "DecisionTreeClassifier" => {
            let c = classes()?;
            (Predictor::TreeClassifier(Trees::single(o, n, c.len())?), c)
        }
        "DecisionTreeRegressor" => (Predictor::TreeRegressor(Trees::single(o, n, 1)?), Vec::new()),
        "RandomForestClassifier" | "ExtraTreesClassifier" => {
            let c = classes()?;
            (Predictor::TreeClassifier(Trees::forest(o, n, c.len())?), c)
        }
        "RandomForestRegressor" | "ExtraTreesRegressor" => {
            (Predictor::TreeRegressor(Trees::forest(o, n, 1)?), Vec::new())
        }
        "GradientBoostingClassifier" => {
            let c = classes()?;
            (Predictor::BoostingClassifier(Boosting::gradient(o, n, c.len())?), c)
        }
        "GradientBoostingRegressor" => (Predictor::BoostingRegressor(Boosting::gradient(o, n, 0)?), Vec::new()),
        "HistGradientBoostingClassifier" => {
            let c = classes()?;
            (Predictor::BoostingClassifier(Boosting::hist(o, n, c.len())?), c)
        }
        "HistGradientBoostingRegressor" => (Predictor::BoostingRegressor(Boosting::hist(o, n, 0)?), Vec::new()),
        _ => {
            return Err(
                o.err("it transforms but does not predict: a model (or a Pipeline's last step) must be an estimator")
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::minor_version;

    #[test]
    fn minor_versions_read_releases_and_dev_builds() {
        assert_eq!(minor_version("1.6.1"), Some((1, 6)));
        assert_eq!(minor_version("1.10.0"), Some((1, 10)));
        assert_eq!(minor_version("1.7.dev0"), Some((1, 7)));
        assert_eq!(minor_version("1.8rc1"), Some((1, 8)));
        assert_eq!(minor_version("1"), None);
        assert_eq!(minor_version("x.y"), None);
        assert!(minor_version("1.10.0") > Some((1, 9)));
    }
}
