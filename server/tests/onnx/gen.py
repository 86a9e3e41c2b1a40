"""Exports scikit-learn models to ONNX with skl2onnx and records onnxruntime's outputs.

Run with the venv from server/tests/onnx/venv: python gen.py OUT_DIR. Every model is fitted on
seeded data and exported with zipmap off (float32 input, and float64 where skl2onnx supports
it); OUT_DIR/manifest.json holds, per model, its file, its input's name and datatype, 1,000
held-out rows and every output onnxruntime returns for them.
"""

import json
import os
import sys
import warnings

import numpy as np
import onnx
import onnxruntime as ort
from skl2onnx import to_onnx
from skl2onnx.common import tree_ensemble as _tree_ensemble
from sklearn.base import is_classifier
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
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, RobustScaler, StandardScaler
from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

warnings.filterwarnings("ignore")

# skl2onnx 1.20 gives HistGradientBoosting leaves a Python bool for
# nodes_missing_value_tracks_true, which onnx 1.23 refuses in an INTS attribute ("Expected an
# int, got a boolean"), so no HistGradientBoosting model exports; pass it on as the int it means.
_add_node = _tree_ensemble.add_node


def _add_node_int(*args, nodes_missing_value_tracks_true=0, **kwargs):
    return _add_node(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)


_tree_ensemble.add_node = _add_node_int
N_TRAIN, N_TEST, N_FEATURES = 2000, 1000, 6
# ai.onnx.ml 3: the TreeEnsembleClassifier/Regressor operators (opset 5 would emit TreeEnsemble).
OPSET = {"": 17, "ai.onnx.ml": 3}

rng = np.random.RandomState(42)
X = rng.randn(N_TRAIN + N_TEST, N_FEATURES) * [1.0, 2.0, 0.5, 3.0, 1.0, 10.0] + [0, 1, -2, 0, 5, 0]
score = X[:, 0] - 0.5 * X[:, 1] + 0.8 * X[:, 2] * X[:, 3] / 3
y_bin = (score + rng.randn(len(X)) * 0.5 > 0).astype(int)
y_3 = np.digitize(score + rng.randn(len(X)) * 0.5, [-1.0, 1.0])
y_reg = X @ [1.5, -2.0, 0.7, 0.1, 3.0, 0.05] + np.sin(X[:, 0]) * 2 + rng.randn(len(X)) * 0.3
train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)

# Rows with NaN in two columns, for the estimators that take missing values (HistGradientBoosting
# learns where they go; SimpleImputer fills them in).
X_NAN = X.copy()
X_NAN[rng.rand(len(X)) < 0.1, 0] = np.nan
X_NAN[rng.rand(len(X)) < 0.1, 3] = np.nan

F32, BOTH = ["float32"], ["float32", "float64"]
MODELS = [
    # (name, estimator, target, dtypes, rows)
    ("logistic_multinomial", LogisticRegression(max_iter=500), y_3, BOTH, X),
    ("logistic_binary", LogisticRegression(max_iter=500), y_bin, F32, X),
    ("scaler_logistic", make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)), y_3, BOTH, X),
    ("linear_regression", LinearRegression(), y_reg, BOTH, X),
    ("ridge", Ridge(alpha=2.0), y_reg, BOTH, X),
    ("lasso", Lasso(alpha=0.05), y_reg, F32, X),
    ("elastic_net", ElasticNet(alpha=0.05, l1_ratio=0.3), y_reg, F32, X),
    ("sgd_classifier", make_pipeline(StandardScaler(), SGDClassifier(random_state=0)), y_3, F32, X),
    ("sgd_log_classifier", make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0)), y_bin, F32, X),
    ("sgd_regressor", make_pipeline(StandardScaler(), SGDRegressor(random_state=0)), y_reg, F32, X),
    ("tree_classifier", DecisionTreeClassifier(max_depth=8, random_state=0), y_3, F32, X),
    ("tree_regressor", DecisionTreeRegressor(max_depth=8, random_state=0), y_reg, F32, X),
    ("forest_classifier", RandomForestClassifier(n_estimators=20, max_depth=8, random_state=0), y_3, F32, X),
    ("forest_binary", RandomForestClassifier(n_estimators=10, max_depth=6, random_state=0), y_bin, F32, X),
    ("forest_regressor", RandomForestRegressor(n_estimators=20, max_depth=8, random_state=0), y_reg, F32, X),
    ("extra_trees_classifier", ExtraTreesClassifier(n_estimators=20, max_depth=8, random_state=0), y_3, F32, X),
    ("extra_trees_regressor", ExtraTreesRegressor(n_estimators=20, max_depth=8, random_state=0), y_reg, F32, X),
    ("boosting_classifier", GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0), y_3, F32, X),
    ("boosting_binary", GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0), y_bin, F32, X),
    ("boosting_regressor", GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=0), y_reg, F32, X),
    ("hist_boosting_classifier", HistGradientBoostingClassifier(max_iter=30, random_state=0), y_3, F32, X_NAN),
    ("hist_boosting_binary", HistGradientBoostingClassifier(max_iter=30, random_state=0), y_bin, F32, X_NAN),
    ("hist_boosting_regressor", HistGradientBoostingRegressor(max_iter=30, random_state=0), y_reg, F32, X_NAN),
    ("minmax_logistic", make_pipeline(MinMaxScaler(), LogisticRegression(max_iter=500)), y_3, F32, X),
    ("maxabs_logistic", make_pipeline(MaxAbsScaler(), LogisticRegression(max_iter=500)), y_3, F32, X),
    ("robust_ridge", make_pipeline(RobustScaler(), Ridge()), y_reg, F32, X),
    ("imputer_logistic", make_pipeline(SimpleImputer(), StandardScaler(), LogisticRegression(max_iter=500)), y_3, F32, X_NAN),
    ("imputer_median_ridge", make_pipeline(SimpleImputer(strategy="median"), Ridge()), y_reg, F32, X_NAN),
    ("mlp_classifier", MLPClassifier(hidden_layer_sizes=(32, 16), max_iter=300, random_state=0), y_3, BOTH, X),
    ("mlp_regressor", make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0)), y_reg, F32, X),
]


def rows(x):
    """Rows as JSON: NaN (not JSON) as null."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in x]


def main(out):
    os.makedirs(out, exist_ok=True)
    models = []
    for name, est, y, dtypes, data in MODELS:
        est.fit(data[train], y[train])
        for dtype in dtypes:
            x = data[test].astype(dtype)
            options = {id(est): {"zipmap": False}} if is_classifier(est) else None
            onx = to_onnx(est, x[:1], options=options, target_opset=OPSET)
            file = f"{name}-{dtype}.onnx"
            with open(os.path.join(out, file), "wb") as f:
                f.write(onx.SerializeToString())
            sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
            inp = sess.get_inputs()[0]
            results = sess.run(None, {inp.name: x})
            outputs = [
                {"name": o.name, "shape": list(r.shape), "data": r.ravel().tolist()}
                for o, r in zip(sess.get_outputs(), results)
            ]
            ops = sorted({n.op_type for n in onx.graph.node})
            models.append(
                {
                    "name": f"{name}-{dtype}",
                    "file": file,
                    "input": inp.name,
                    "datatype": "FP32" if dtype == "float32" else "FP64",
                    "ops": ops,
                    "x": rows(data[test]),
                    "outputs": outputs,
                }
            )
    hostile = write_hostile(out, os.path.join(out, "forest_classifier-float32.onnx"))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"models": models, "hostile": hostile}, f)


def write_hostile(out, forest_file):
    """Broken variants of a good forest and small hand-made graphs, each with the error it must get."""
    from onnx import TensorProto, helper

    cases = []

    def save(name, model, want):
        file = f"hostile-{name}.onnx"
        with open(os.path.join(out, file), "wb") as f:
            f.write(model.SerializeToString())
        cases.append({"name": name, "file": file, "want": want})

    def forest_with(name, attr, edit, want):
        model = onnx.load(forest_file)
        node = next(n for n in model.graph.node if n.op_type == "TreeEnsembleClassifier")
        a = next(a for a in node.attribute if a.name == attr)
        edit(a)
        save(name, model, want)

    def child_out_of_range(a):
        a.ints[0] = 10**6

    def child_loops_back(a):
        a.ints[0] = 0

    def class_out_of_range(a):
        a.ints[0] = 7

    def short(a):
        del a.ints[-1]

    forest_with("child-out-of-range", "nodes_truenodeids", child_out_of_range, "has child 1000000")
    forest_with("child-loops-back", "nodes_truenodeids", child_loops_back, "has child 0")
    forest_with("vote-for-unknown-class", "class_ids", class_out_of_range, "a vote is for output 7 of 3")
    forest_with("short-attribute", "nodes_featureids", short, "the same non-zero length")

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])
    opset = [helper.make_opsetid("", 17)]
    def tensor(dims):
        t = TensorProto(name="W", data_type=TensorProto.FLOAT)
        t.dims.extend(dims)
        return t

    huge = tensor([1 << 20, 1 << 20])
    graph = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"])], "huge", [x], [y], [huge])
    save("huge-initializer", helper.make_model(graph, opset_imports=opset), "over 268435456 elements")
    ext = tensor([2])
    ext.data_location = TensorProto.EXTERNAL
    ext.external_data.add(key="location", value="/etc/passwd")
    graph = helper.make_graph([helper.make_node("Add", ["X", "W"], ["Y"])], "external", [x], [y], [ext])
    save("external-data", helper.make_model(graph, opset_imports=opset), "external file")
    graph = helper.make_graph([helper.make_node("Frobnicate", ["X"], ["Y"], domain="example.com")], "op", [x], [y])
    save("unknown-op", helper.make_model(graph, opset_imports=opset), "ONNX operator Frobnicate")
    # An output no node makes (tract panicked on it; found by the onnx fuzz target).
    graph = helper.make_graph([helper.make_node("Abs", ["X"], ["Y"])], "dangling", [x],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 2])])
    save("dangling-output", helper.make_model(graph, opset_imports=opset), 'graph output "Z" is not produced')
    with open(os.path.join(out, "hostile-garbage.onnx"), "wb") as f:
        f.write(b"\x08\x08\x12" + bytes(range(256)) * 4)
    cases.append({"name": "garbage", "file": "hostile-garbage.onnx", "want": "not a valid ONNX model"})
    return cases


if __name__ == "__main__":
    main(sys.argv[1])
