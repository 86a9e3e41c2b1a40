//! Transformers: StandardScaler, MinMaxScaler, MaxAbsScaler, RobustScaler and SimpleImputer,
//! applied column by column in scikit-learn's order of operations.

use ndarray::Array2;

use super::SklearnError;
use super::object::Obj;
use super::pickle::Node;

/// A fitted transformer.
#[derive(Debug, Clone)]
pub enum Transform {
    /// `(x - offset) / scale` (Standard and Robust scalers, MaxAbs with no offset); either may be off.
    Scale { offset: Option<Vec<f64>>, scale: Option<Vec<f64>> },
    /// MinMaxScaler: `x * scale + min`, then clipped to the feature range if `clip`.
    MinMax { scale: Vec<f64>, min: Vec<f64>, clip: Option<(f64, f64)> },
    /// SimpleImputer: missing values replaced by the statistic; columns without one dropped.
    Impute { missing: Missing, statistics: Vec<f64>, keep: Vec<usize> },
}

/// What SimpleImputer treats as missing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Missing {
    Nan,
    Value(f64),
}

impl Transform {
    /// Reads a transformer of class `o.class` taking `n` features.
    pub fn load(o: &Obj<'_>, n: usize) -> Result<Self, SklearnError> {
        Ok(match o.class {
            "StandardScaler" => Self::Scale {
                offset: if o.bool_or("with_mean", true)? { o.opt_vector("mean_", n)? } else { None },
                scale: if o.bool_or("with_std", true)? { o.opt_vector("scale_", n)? } else { None },
            },
            "RobustScaler" => Self::Scale {
                offset: if o.bool_or("with_centering", true)? { o.opt_vector("center_", n)? } else { None },
                scale: if o.bool_or("with_scaling", true)? { o.opt_vector("scale_", n)? } else { None },
            },
            "MaxAbsScaler" => Self::Scale { offset: None, scale: Some(o.vector("scale_", n)?) },
            "MinMaxScaler" => {
                let clip = if o.bool_or("clip", false)? {
                    let (_, r) = o.numbers("feature_range")?;
                    match r.as_slice() {
                        [lo, hi] if lo <= hi => Some((*lo, *hi)),
                        _ => return Err(o.err(format!("feature_range {r:?} is not (min, max)"))),
                    }
                } else {
                    None
                };
                Self::MinMax { scale: o.vector("scale_", n)?, min: o.vector("min_", n)?, clip }
            }
            "SimpleImputer" => Self::imputer(o, n)?,
            other => return Err(o.err(format!("{other} is not a transformer"))),
        })
    }

    fn imputer(o: &Obj<'_>, n: usize) -> Result<Self, SklearnError> {
        if o.bool_or("add_indicator", false)? {
            return Err(o.err("add_indicator=True is not supported"));
        }
        let missing = match o.req("missing_values")? {
            Node::Float(f) if f.is_nan() => Missing::Nan,
            Node::Float(f) => Missing::Value(*f),
            Node::Int(i) => Missing::Value(*i as f64),
            other => return Err(o.err(format!("missing_values of type {} is not supported", other.type_name()))),
        };
        let statistics = o.vector("statistics_", n)?;
        // Without keep_empty_features, columns whose statistic is NaN (never observed) are dropped.
        let keep_all = o.bool_or("keep_empty_features", false)?;
        let keep = (0..n).filter(|&j| keep_all || !statistics[j].is_nan()).collect();
        Ok(Self::Impute { missing, statistics, keep })
    }

    /// Number of output columns for `n` input columns.
    pub fn n_out(&self, n: usize) -> usize {
        match self {
            Self::Impute { keep, .. } => keep.len(),
            _ => n,
        }
    }

    /// Applies the transform to `x`, whose width was checked at load.
    pub fn apply(&self, mut x: Array2<f64>) -> Array2<f64> {
        match self {
            Self::Scale { offset, scale } => {
                for mut row in x.outer_iter_mut() {
                    for (j, v) in row.iter_mut().enumerate() {
                        if let Some(o) = offset.as_ref().and_then(|o| o.get(j)) {
                            *v -= o;
                        }
                        if let Some(s) = scale.as_ref().and_then(|s| s.get(j)) {
                            *v /= s;
                        }
                    }
                }
                x
            }
            Self::MinMax { scale, min, clip } => {
                for mut row in x.outer_iter_mut() {
                    for ((v, s), m) in row.iter_mut().zip(scale).zip(min) {
                        *v *= s;
                        *v += m;
                        if let Some((lo, hi)) = clip {
                            // np.clip keeps NaN; f64::max/min would not.
                            if *v < *lo {
                                *v = *lo;
                            } else if *v > *hi {
                                *v = *hi;
                            }
                        }
                    }
                }
                x
            }
            Self::Impute { missing, statistics, keep } => {
                let mut out = Array2::zeros((x.nrows(), keep.len()));
                for (row, mut o) in x.outer_iter().zip(out.outer_iter_mut()) {
                    for (o, &j) in o.iter_mut().zip(keep) {
                        let v = row.get(j).copied().unwrap_or(f64::NAN);
                        let is_missing = match missing {
                            Missing::Nan => v.is_nan(),
                            Missing::Value(m) => v == *m,
                        };
                        *o = if is_missing { statistics.get(j).copied().unwrap_or(f64::NAN) } else { v };
                    }
                }
                out
            }
        }
    }
}
