"""Generates scikit-learn models and scikit-learn's own predictions for the parity test.

Run with a venv from server/tests/sklearn/venv: python gen.py OUT_DIR. Every model is fitted on
seeded data, saved with pickle (protocols 2 to 5), joblib (plain and compressed: zlib level 3,
gzip, xz, lzma), cloudpickle and skops (stored and deflated), and OUT_DIR/manifest.json holds, per model, its files, 1,000
held-out rows (NaN written as null) and what predict / predict_proba return for them.
"""

import json
import os
import pickle
import sys
import warnings
import zipfile

import cloudpickle
import joblib
import numpy as np
import pandas as pd
import sklearn
import skops
import skops.io
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.impute import SimpleImputer
from sklearn.linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

warnings.filterwarnings("ignore")
# A model fitted on named columns and asked with a bare array is a mistake here, not a warning.
warnings.filterwarnings("error", message="X does not have valid feature names")
VERSION = tuple(int(p) for p in sklearn.__version__.split(".")[:2])
N_TRAIN, N_TEST, N_FEATURES = 2000, 1000, 6

rng = np.random.RandomState(42)
X = rng.randn(N_TRAIN + N_TEST, N_FEATURES) * [1.0, 2.0, 0.5, 3.0, 1.0, 10.0] + [0, 1, -2, 0, 5, 0]
score = X[:, 0] - 0.5 * X[:, 1] + 0.8 * X[:, 2] * X[:, 3] / 3
y_bin = (score + rng.randn(len(X)) * 0.5 > 0).astype(int)
y_3 = np.digitize(score + rng.randn(len(X)) * 0.5, [-1.0, 1.0])
y_str = np.array(["setosa", "versicolor", "virginica"])[y_3]
y_odd = np.array([-1, 5, 10])[y_3]
y_reg = X @ [1.5, -2.0, 0.7, 0.1, 3.0, 0.05] + np.sin(X[:, 0]) * 2 + rng.randn(len(X)) * 0.3
y_count = np.exp(y_reg / 10)

# 10% missing cells, for the estimators that accept NaN; column 5 has no value at all in one set.
X_nan = X.copy()
X_nan[rng.rand(*X.shape) < 0.1] = np.nan
X_empty_col = X_nan.copy()
X_empty_col[:N_TRAIN, 5] = np.nan
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width", "age", "income"]


def frame(a):
    """The rows as a pandas DataFrame with named columns (an estimator fitted on one keeps
    `feature_names_in_`)."""
    return pd.DataFrame(a, columns=NAMES)


def pipe(*steps):
    return make_pipeline(*steps)


# name, estimator, X, y, sklearn versions it applies to (None: all)
SPECS = [
    ("logistic_binary", LogisticRegression(max_iter=1000), X, y_bin, None),
    ("logistic_multinomial", LogisticRegression(max_iter=1000), X, y_3, None),
    ("logistic_strings_named", LogisticRegression(max_iter=1000, C=0.5), X, y_str, None),
    ("pipeline_impute_tree_named", pipe(SimpleImputer(), DecisionTreeClassifier(max_depth=6, random_state=0)), X_nan, y_3, None),
    ("logistic_no_intercept", LogisticRegression(max_iter=1000, fit_intercept=False), X, y_odd, None),
    ("logistic_liblinear_binary", LogisticRegression(solver="liblinear"), X, y_bin, None),
    ("linear_regression", LinearRegression(), X, y_reg, None),
    ("ridge", Ridge(alpha=2.0), X, y_reg, None),
    ("lasso", Lasso(alpha=0.1), X, y_reg, None),
    ("elastic_net", ElasticNet(alpha=0.1, l1_ratio=0.3), X, y_reg, None),
    ("sgd_regressor", pipe(StandardScaler(), SGDRegressor(random_state=0)), X, y_reg, None),
    ("sgd_hinge", pipe(StandardScaler(), SGDClassifier(random_state=0)), X, y_3, None),
    ("sgd_log_binary", pipe(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)), X, y_bin, None),
    ("sgd_log_multi", pipe(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)), X, y_str, None),
    ("sgd_modified_huber", pipe(StandardScaler(), SGDClassifier(loss="modified_huber", random_state=0)), X, y_3, None),
    ("sgd_modified_huber_binary", pipe(StandardScaler(), SGDClassifier(loss="modified_huber", random_state=0)), X, y_bin, None),
    ("decision_tree_classifier", DecisionTreeClassifier(max_depth=8, random_state=0), X_nan, y_str, None),
    ("decision_tree_regressor", DecisionTreeRegressor(max_depth=8, random_state=0), X_nan, y_reg, None),
    ("decision_tree_at_thresholds", DecisionTreeRegressor(max_depth=10, random_state=0), X, y_reg, None),
    ("random_forest_at_thresholds", RandomForestClassifier(n_estimators=5, max_depth=8, random_state=0), X, y_3, None),
    ("decision_tree_best_first", DecisionTreeClassifier(max_leaf_nodes=30, random_state=0), X, y_odd, None),
    # Take NaN in predict from scikit-learn 1.9 on (not before): other criteria, monotonic constraints.
    ("decision_tree_absolute_error", DecisionTreeRegressor(criterion="absolute_error", max_depth=6, random_state=0), X, y_reg, None),
    ("decision_tree_monotonic", DecisionTreeRegressor(monotonic_cst=[1, 0, 0, -1, 0, 0], max_depth=6, random_state=0), X, y_reg, None),
    ("random_forest_classifier", RandomForestClassifier(n_estimators=15, max_depth=8, random_state=0), X_nan, y_3, None),
    ("random_forest_regressor", RandomForestRegressor(n_estimators=15, max_depth=8, random_state=0), X_nan, y_reg, None),
    ("extra_trees_classifier", ExtraTreesClassifier(n_estimators=15, max_depth=8, random_state=0), X, y_bin, None),
    ("extra_trees_regressor", ExtraTreesRegressor(n_estimators=15, max_depth=8, random_state=0), X, y_reg, None),
    ("pipeline_impute_standard_logistic", pipe(SimpleImputer(), StandardScaler(), LogisticRegression()), X_nan, y_3, None),
    (
        "pipeline_median_minmax_clip_ridge",
        pipe(SimpleImputer(strategy="median"), MinMaxScaler(clip=True), Ridge()),
        X_nan,
        y_reg,
        None,
    ),
    ("pipeline_maxabs_robust_forest", pipe(MaxAbsScaler(), RobustScaler(), RandomForestClassifier(n_estimators=5, random_state=0)), X, y_odd, None),
    (
        "pipeline_most_frequent_tree",
        pipe(SimpleImputer(strategy="most_frequent"), DecisionTreeRegressor(max_depth=6, random_state=0)),
        X_nan,
        y_reg,
        None,
    ),
    ("pipeline_constant_sgd", pipe(SimpleImputer(strategy="constant", fill_value=-1.0), StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)), X_nan, y_bin, None),
    ("pipeline_drops_empty_column", pipe(SimpleImputer(), StandardScaler(with_std=False), LinearRegression()), X_empty_col, y_reg, None),
    (
        "pipeline_nested_passthrough",
        Pipeline([("pre", pipe(SimpleImputer(), RobustScaler(with_centering=False))), ("skip", "passthrough"), ("m", LogisticRegression())]),
        X_nan,
        y_str,
        None,
    ),
    ("gradient_boosting_binary", GradientBoostingClassifier(n_estimators=30, random_state=0), X, y_bin, None),
    ("gradient_boosting_multiclass", GradientBoostingClassifier(n_estimators=20, random_state=0), X, y_str, None),
    ("gradient_boosting_zero_init", GradientBoostingClassifier(n_estimators=20, init="zero", random_state=0), X, y_bin, None),
    ("gradient_boosting_regressor", GradientBoostingRegressor(n_estimators=30, random_state=0), X, y_reg, None),
    ("gradient_boosting_huber", GradientBoostingRegressor(loss="huber", n_estimators=20, random_state=0), X, y_reg, None),
    ("hist_gradient_boosting_binary", HistGradientBoostingClassifier(max_iter=30, random_state=0), X_nan, y_bin, None),
    ("hist_gradient_boosting_multiclass", HistGradientBoostingClassifier(max_iter=20, random_state=0), X_nan, y_odd, None),
    ("hist_gradient_boosting_regressor", HistGradientBoostingRegressor(max_iter=30, random_state=0), X_nan, y_reg, None),
    ("hist_gradient_boosting_poisson", HistGradientBoostingRegressor(loss="poisson", max_iter=20, random_state=0), X_nan, y_count, None),
    ("logistic_liblinear_multiclass", LogisticRegression(solver="liblinear"), X, y_3, (1, 7)),
]
if VERSION >= (1, 6):
    # ExtraTrees learn where missing values go from 1.6 on (random forests from 1.4, trees from 1.3).
    SPECS += [
        ("extra_trees_classifier_nan", ExtraTreesClassifier(n_estimators=15, max_depth=8, random_state=0), X_nan, y_3, None),
        ("extra_trees_regressor_nan", ExtraTreesRegressor(n_estimators=15, max_depth=8, random_state=0), X_nan, y_reg, None),
    ]
if VERSION < (1, 7):
    # Before 1.7, multi_class picks one-vs-rest or softmax probabilities.
    SPECS += [
        ("logistic_ovr", LogisticRegression(multi_class="ovr", max_iter=1000), X, y_3, None),
        ("logistic_multinomial_binary", LogisticRegression(multi_class="multinomial", max_iter=1000), X, y_bin, None),
    ]

FORMATS = {
    "pickle2.pkl": lambda m, p: pickle.dump(m, open(p, "wb"), protocol=2),
    "pickle3.pkl": lambda m, p: pickle.dump(m, open(p, "wb"), protocol=3),
    "pickle4.pkl": lambda m, p: pickle.dump(m, open(p, "wb"), protocol=4),
    "pickle5.pkl": lambda m, p: pickle.dump(m, open(p, "wb"), protocol=5),
    "joblib.joblib": lambda m, p: joblib.dump(m, p),
    "joblib-zlib3.joblib": lambda m, p: joblib.dump(m, p, compress=3),
    "joblib-gzip.joblib": lambda m, p: joblib.dump(m, p, compress=("gzip", 3)),
    "joblib-xz.joblib": lambda m, p: joblib.dump(m, p, compress=("xz", 3)),
    "joblib-lzma.joblib": lambda m, p: joblib.dump(m, p, compress=("lzma", 3)),
    "cloudpickle.pkl": lambda m, p: cloudpickle.dump(m, open(p, "wb")),
    "skops.skops": lambda m, p: skops.io.dump(m, p),
    "skops-deflate.skops": lambda m, p: skops.io.dump(m, p, compression=zipfile.ZIP_DEFLATED),
}


def at_thresholds(est, test):
    """Held-out rows with one feature set exactly to a split threshold: scikit-learn compares in
    float32, so some of these go right where a float64 comparison would go left."""
    test = test.copy()
    trees = getattr(est, "estimators_", [est])
    i = 0
    for t in trees:
        for f, thr in zip(t.tree_.feature, t.tree_.threshold):
            if f >= 0:
                test[i % len(test), f] = thr
                i += 1
    return test


def nulls(a):
    return [[None if np.isnan(v) else float(v) for v in row] for row in a]


def main(out):
    os.makedirs(out, exist_ok=True)
    models = []
    for name, est, data, y, before in SPECS:
        if before is not None and VERSION > before:
            continue
        train, test = data[:N_TRAIN], data[N_TRAIN:]
        # "_named" models are fitted on a DataFrame, so scikit-learn sets feature_names_in_.
        rows = frame if name.endswith("_named") else np.asarray
        try:
            est.fit(rows(train), y[:N_TRAIN])
            nan = bool(np.isnan(train).any())
        except ValueError:
            # This scikit-learn version does not accept NaN for the estimator: fit and test on clean rows.
            train, test = X[:N_TRAIN], X[N_TRAIN:]
            est.fit(rows(train), y[:N_TRAIN])
            nan = False
        accepts_nan = _accepts_nan(est, rows)
        if name.endswith("_at_thresholds"):
            test = at_thresholds(est, test)
        elif accepts_nan and not nan:
            # Fitted on complete rows but predicts with NaN (trees send it where most samples went).
            test = X_nan[N_TRAIN:]
        files = {}
        for fmt, save in FORMATS.items():
            path = f"{name}.{fmt}"
            save(est, os.path.join(out, path))
            files[fmt] = path
        pred = est.predict(rows(test))
        proba = est.predict_proba(rows(test)).tolist() if hasattr(est, "predict_proba") and _has_proba(est, rows) else None
        classes = est.classes_.tolist() if hasattr(est, "classes_") else None
        models.append(
            {
                "name": name,
                "nan": nan,
                "accepts_nan": accepts_nan,
                "files": files,
                "x": nulls(test),
                "predict": pred.tolist(),
                "proba": proba,
                "classes": classes,
                "feature_names": list(getattr(est, "feature_names_in_", [])) or None,
            }
        )
    manifest = {
        "sklearn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
        "skops": skops.__version__,
        "models": models,
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def _accepts_nan(est, rows):
    """Whether this scikit-learn's predict takes a row with a missing value."""
    row = X[:1].copy()
    row[0, 0] = np.nan
    try:
        est.predict(rows(row))
        return True
    except ValueError:
        return False


def _has_proba(est, rows):
    try:
        est.predict_proba(rows(X[:1]))
        return True
    except AttributeError:
        return False


if __name__ == "__main__":
    main(sys.argv[1])
