//! Training with linfa: iris (shipped offline by `linfa-datasets`) or any numeric CSV.

use std::path::Path;

use linfa::prelude::*;
use linfa_linear::LinearRegression;
use linfa_logistic::MultiLogisticRegression;
use linfa_trees::DecisionTree;
use ndarray::{Array1, Array2, Axis};

use crate::artifact::{Artifact, Estimator, FORMAT, FORMAT_VERSION, FeatureStats, TrainingInfo};

/// Which linfa algorithm to fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Algorithm {
    /// Multinomial logistic regression (classification).
    Logistic,
    /// CART decision tree (classification).
    Tree,
    /// Ordinary least squares (regression).
    Linear,
}

/// A table to train on.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub feature_names: Vec<String>,
    pub records: Array2<f64>,
    /// Raw target column: class labels or numbers as text.
    pub targets: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("reading {path}: {source}")]
    Csv { path: String, source: csv::Error },
    #[error("{0}")]
    Data(String),
    #[error("fitting the model: {0}")]
    Fit(String),
}

/// Fraction of rows held out for evaluation.
const HOLDOUT: f64 = 0.2;

/// The iris data set (150 rows, 3 classes), shipped inside `linfa-datasets`.
pub fn iris() -> Table {
    let ds = linfa_datasets::iris();
    let names = ["setosa", "versicolor", "virginica"];
    Table {
        name: "iris".into(),
        feature_names: ["sepal_length", "sepal_width", "petal_length", "petal_width"].map(String::from).to_vec(),
        records: ds.records().to_owned(),
        targets: ds.targets().iter().map(|&t| names[t].to_string()).collect(),
    }
}

/// Reads a CSV with a header row; every column but `target` must be numeric.
pub fn read_csv(path: &Path, target: &str) -> Result<Table, TrainError> {
    let csv_err = |source| TrainError::Csv { path: path.display().to_string(), source };
    let mut reader = csv::Reader::from_path(path).map_err(csv_err)?;
    let headers = reader.headers().map_err(csv_err)?.clone();
    let t = headers.iter().position(|h| h == target).ok_or_else(|| {
        TrainError::Data(format!("no column {target:?}; columns are {:?}", headers.iter().collect::<Vec<_>>()))
    })?;
    let feature_names: Vec<String> =
        headers.iter().enumerate().filter(|&(i, _)| i != t).map(|(_, h)| h.to_string()).collect();
    let (mut data, mut targets) = (Vec::new(), Vec::new());
    for (line, rec) in reader.records().enumerate() {
        let rec = rec.map_err(csv_err)?;
        for (i, field) in rec.iter().enumerate() {
            if i == t {
                targets.push(field.to_string());
            } else {
                let v: f64 = field.trim().parse().map_err(|_| {
                    TrainError::Data(format!("row {}: column {:?} is not a number: {field:?}", line + 2, &headers[i]))
                })?;
                data.push(v);
            }
        }
    }
    let n = targets.len();
    let records =
        Array2::from_shape_vec((n, feature_names.len()), data).map_err(|e| TrainError::Data(e.to_string()))?;
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into());
    Ok(Table { name, feature_names, records, targets })
}

/// A deterministic permutation (xorshift), so training is reproducible without a rand dependency.
fn permutation(n: usize, seed: u64) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut s = seed.max(1);
    for i in (1..n).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        idx.swap(i, (s % (i as u64 + 1)) as usize);
    }
    idx
}

/// Per-feature statistics with a 10-bin histogram.
pub fn feature_stats(names: &[String], records: &Array2<f64>) -> Vec<FeatureStats> {
    const BINS: usize = 10;
    names
        .iter()
        .zip(records.axis_iter(Axis(1)))
        .map(|(name, col)| {
            let n = col.len().max(1) as f64;
            let mean = col.sum() / n;
            let std = (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let min = col.iter().copied().fold(f64::INFINITY, f64::min);
            let max = col.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let width = if max > min { (max - min) / BINS as f64 } else { 1.0 };
            let mut counts = vec![0u64; BINS];
            for v in col {
                counts[(((v - min) / width) as usize).min(BINS - 1)] += 1;
            }
            FeatureStats {
                name: name.clone(),
                mean,
                std,
                min,
                max,
                histogram_edges: (0..=BINS).map(|i| min + width * i as f64).collect(),
                histogram_counts: counts,
            }
        })
        .collect()
}

/// Fits `algorithm` on `table`, evaluates on a hold-out split, and builds the artifact.
pub fn train(table: &Table, algorithm: Algorithm, seed: u64) -> Result<Artifact, TrainError> {
    let n = table.records.nrows();
    if n < 5 {
        return Err(TrainError::Data(format!("{n} rows is too few to train and evaluate")));
    }
    let order = permutation(n, seed);
    let n_test = ((n as f64) * HOLDOUT).round().max(1.0) as usize;
    let (test_idx, train_idx) = order.split_at(n_test);
    let x_train = table.records.select(Axis(0), train_idx);
    let x_test = table.records.select(Axis(0), test_idx);

    let (estimator, class_names, metric, score) = match algorithm {
        Algorithm::Logistic | Algorithm::Tree => {
            let mut class_names: Vec<String> = table.targets.clone();
            class_names.sort();
            class_names.dedup();
            if class_names.len() < 2 {
                return Err(TrainError::Data("a classifier needs at least two classes in the target column".into()));
            }
            let ids: Array1<usize> =
                table.targets.iter().map(|t| class_names.binary_search(t).unwrap_or_default()).collect();
            let y_train = ids.select(Axis(0), train_idx);
            let y_test = ids.select(Axis(0), test_idx);
            let ds = Dataset::new(x_train, y_train);
            let (estimator, pred): (Estimator, Array1<usize>) = if algorithm == Algorithm::Logistic {
                let m = MultiLogisticRegression::default()
                    .max_iterations(200)
                    .fit(&ds)
                    .map_err(|e| TrainError::Fit(e.to_string()))?;
                let pred = m.predict(&x_test);
                (Estimator::LogisticRegression(m), pred)
            } else {
                let m =
                    DecisionTree::params().max_depth(Some(10)).fit(&ds).map_err(|e| TrainError::Fit(e.to_string()))?;
                let pred = m.predict(&x_test);
                (Estimator::DecisionTree(m), pred)
            };
            let correct = pred.iter().zip(&y_test).filter(|(a, b)| a == b).count();
            (estimator, class_names, "accuracy", correct as f64 / n_test as f64)
        }
        Algorithm::Linear => {
            let y: Array1<f64> = table
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    t.trim()
                        .parse::<f64>()
                        .map_err(|_| TrainError::Data(format!("target of row {} is not a number: {t:?}", i + 1)))
                })
                .collect::<Result<_, _>>()?;
            let ds = Dataset::new(x_train, y.select(Axis(0), train_idx));
            let m = LinearRegression::new().fit(&ds).map_err(|e| TrainError::Fit(e.to_string()))?;
            let y_test = y.select(Axis(0), test_idx);
            let pred: Array1<f64> = m.predict(&x_test);
            let mean = y_test.mean().unwrap_or_default();
            let ss_res: f64 = pred.iter().zip(&y_test).map(|(p, t)| (t - p).powi(2)).sum();
            let ss_tot: f64 = y_test.iter().map(|t| (t - mean).powi(2)).sum();
            let r2 = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 0.0 };
            (Estimator::LinearRegression(m), Vec::new(), "r2", r2)
        }
    };

    Ok(Artifact {
        format: FORMAT.into(),
        format_version: FORMAT_VERSION,
        name: table.name.clone(),
        feature_names: table.feature_names.clone(),
        class_names,
        training: TrainingInfo {
            trained_at: jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_else(|_| jiff::Timestamp::now())
                .to_string(),
            train_rows: train_idx.len(),
            holdout_rows: n_test,
            holdout_metric: metric.into(),
            holdout_score: score,
            dataset: table.name.clone(),
            modelship_version: env!("CARGO_PKG_VERSION").into(),
        },
        feature_stats: feature_stats(&table.feature_names, &table.records),
        estimator,
    })
}
