//! Linear models: LinearRegression, Ridge, Lasso, ElasticNet, SGDRegressor (regression) and
//! LogisticRegression, SGDClassifier (classification), computed as scikit-learn does.

use ndarray::{Array2, ArrayView2};

use super::SklearnError;
use super::object::Obj;

/// `X @ coef_ + intercept_` for one target.
#[derive(Debug, Clone)]
pub struct LinearRegressor {
    coef: Vec<f64>,
    intercept: f64,
}

impl LinearRegressor {
    /// Reads `coef_` and `intercept_` of a single-target regressor taking `n_features`.
    pub fn load(o: &Obj<'_>, n_features: usize) -> Result<Self, SklearnError> {
        let (shape, _) = o.numbers("coef_")?;
        if shape.len() > 2 || (shape.len() == 2 && shape[0] != 1) {
            return Err(o.err(format!("coef_ has shape {shape:?}: multi-target regression is not supported")));
        }
        let coef = o.vector("coef_", n_features)?;
        let intercept = o.vector("intercept_", 1)?[0];
        Ok(Self { coef, intercept })
    }

    /// One value per row.
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Vec<f64> {
        x.outer_iter().map(|row| dot(row.iter(), &self.coef) + self.intercept).collect()
    }
}

/// How a linear classifier turns decision values into probabilities.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Proba {
    /// Logistic per class, normalised over classes (`_predict_proba_lr`).
    OneVsRest,
    /// Softmax over classes (multinomial logistic regression).
    Softmax,
    /// SGD's `modified_huber` rule.
    ModifiedHuber,
    /// No probabilities (e.g. SGD with hinge loss).
    Unavailable,
}

/// A linear classifier: one row of coefficients per class (one for binary problems).
#[derive(Debug, Clone)]
pub struct LinearClassifier {
    coef: Array2<f64>,
    intercept: Vec<f64>,
    pub proba: Proba,
    n_classes: usize,
}

impl LinearClassifier {
    /// LogisticRegression, with the probability rule of the scikit-learn version that wrote it.
    pub fn logistic(o: &Obj<'_>, n_features: usize, n_classes: usize) -> Result<Self, SklearnError> {
        let binary = n_classes <= 2;
        let proba = match o.get("multi_class") {
            // scikit-learn before 1.7 decided by `multi_class` and the solver.
            Some(_) => {
                let mc = o.str("multi_class")?;
                let solver = o.str("solver").unwrap_or("lbfgs");
                let ovr = matches!(mc, "ovr" | "warn")
                    || (matches!(mc, "auto" | "deprecated")
                        && (binary || matches!(solver, "liblinear" | "newton-cholesky")));
                if ovr { Proba::OneVsRest } else { Proba::Softmax }
            }
            None if binary => Proba::OneVsRest,
            None => Proba::Softmax,
        };
        Self::load(o, n_features, n_classes, proba)
    }

    /// SGDClassifier: probabilities only for `log_loss` and `modified_huber`.
    pub fn sgd(o: &Obj<'_>, n_features: usize, n_classes: usize) -> Result<Self, SklearnError> {
        let proba = match o.str("loss")? {
            "log_loss" | "log" => Proba::OneVsRest,
            "modified_huber" => Proba::ModifiedHuber,
            _ => Proba::Unavailable,
        };
        Self::load(o, n_features, n_classes, proba)
    }

    fn load(o: &Obj<'_>, n_features: usize, n_classes: usize, proba: Proba) -> Result<Self, SklearnError> {
        if n_classes < 2 {
            return Err(o.err("a classifier needs at least two classes"));
        }
        let rows = if n_classes == 2 { 1 } else { n_classes };
        let (shape, coef) = o.numbers("coef_")?;
        if shape != [rows, n_features] {
            return Err(o.err(format!("coef_ has shape {shape:?}, expected [{rows}, {n_features}]")));
        }
        let coef = Array2::from_shape_vec((rows, n_features), coef).map_err(|e| o.err(e.to_string()))?;
        let intercept = o.vector("intercept_", rows)?;
        Ok(Self { coef, intercept, proba, n_classes })
    }

    /// Decision values: one column for binary problems, one per class otherwise.
    fn decision(&self, x: ArrayView2<'_, f64>) -> Array2<f64> {
        let mut d = Array2::zeros((x.nrows(), self.intercept.len()));
        for (row, mut out) in x.outer_iter().zip(d.outer_iter_mut()) {
            for ((o, w), b) in out.iter_mut().zip(self.coef.outer_iter()).zip(&self.intercept) {
                *o = dot(row.iter(), w.as_slice().unwrap_or_default()) + b;
            }
        }
        d
    }

    /// Class indices: `decision > 0` for binary problems, else the first largest decision.
    pub fn predict(&self, x: ArrayView2<'_, f64>) -> Vec<usize> {
        let d = self.decision(x);
        d.outer_iter().map(|r| if r.len() == 1 { usize::from(r[0] > 0.0) } else { argmax(r.iter().copied()) }).collect()
    }

    /// Class probabilities, or `None` when the model has none.
    pub fn predict_proba(&self, x: ArrayView2<'_, f64>) -> Option<Array2<f64>> {
        let d = self.decision(x);
        let k = self.n_classes;
        let mut p = Array2::zeros((x.nrows(), k));
        for (dr, mut pr) in d.outer_iter().zip(p.outer_iter_mut()) {
            let pr = pr.as_slice_mut()?;
            let dr = dr.to_vec();
            match (self.proba, dr.as_slice()) {
                (Proba::Unavailable, _) => return None,
                (Proba::OneVsRest, [z]) => {
                    let s = expit(*z);
                    pr.copy_from_slice(&[1.0 - s, s]);
                }
                (Proba::OneVsRest, zs) => {
                    for (o, z) in pr.iter_mut().zip(zs) {
                        *o = expit(*z);
                    }
                    let sum: f64 = pr.iter().sum();
                    pr.iter_mut().for_each(|o| *o /= sum);
                }
                (Proba::Softmax, [z]) => softmax(&[-z, *z], pr),
                (Proba::Softmax, zs) => softmax(zs, pr),
                (Proba::ModifiedHuber, [z]) => {
                    let s = (z.clamp(-1.0, 1.0) + 1.0) / 2.0;
                    pr.copy_from_slice(&[1.0 - s, s]);
                }
                (Proba::ModifiedHuber, zs) => {
                    for (o, z) in pr.iter_mut().zip(zs) {
                        *o = (z.clamp(-1.0, 1.0) + 1.0) / 2.0;
                    }
                    let sum: f64 = pr.iter().sum();
                    if sum == 0.0 {
                        pr.iter_mut().for_each(|o| *o = 1.0 / k as f64);
                    } else {
                        pr.iter_mut().for_each(|o| *o /= sum);
                    }
                }
            }
        }
        Some(p)
    }
}

fn dot<'a>(x: impl Iterator<Item = &'a f64>, w: &[f64]) -> f64 {
    x.zip(w).map(|(a, b)| a * b).sum()
}

fn expit(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

/// scikit-learn's `softmax`: subtract the row maximum, exponentiate, normalise.
pub(super) fn softmax(z: &[f64], out: &mut [f64]) {
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    for (o, v) in out.iter_mut().zip(z) {
        *o = (v - max).exp();
    }
    let sum: f64 = out.iter().sum();
    out.iter_mut().for_each(|o| *o /= sum);
}

/// Index of the first largest value (numpy's `argmax`).
pub fn argmax(values: impl Iterator<Item = f64>) -> usize {
    let mut best = (f64::NEG_INFINITY, 0);
    for (i, v) in values.enumerate() {
        if v > best.0 || (i == 0 && v.is_nan()) {
            best = (v, i);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), 1);
        assert_eq!(argmax([-1.0].into_iter()), 0);
    }

    #[test]
    fn softmax_sums_to_one() {
        let mut out = [0.0; 3];
        softmax(&[1.0, 2.0, 1000.0], &mut out);
        assert!((out.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(out[2] > 0.999);
    }
}
