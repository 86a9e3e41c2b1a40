"""Exports two skl2onnx models for check_onnx.py and records onnxruntime's outputs for the rows
it sends: a RandomForestClassifier on FP32 input and an MLPClassifier on FP64 input (zipmap off).
Run with the ONNX test venv (server/tests/onnx/venv): python onnx_models.py OUT_DIR."""
import json
import os
import sys

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.neural_network import MLPClassifier

out = sys.argv[1]
X, y = load_iris(return_X_y=True)
rows = X[::15]
models = {}
for name, est, dtype in (("forest", RandomForestClassifier(n_estimators=10, max_depth=5, random_state=0), np.float32),
                         ("mlp", MLPClassifier(hidden_layer_sizes=(8,), max_iter=2000, random_state=0), np.float64)):
    est.fit(X, y)
    onx = to_onnx(est, X[:1].astype(dtype), options={id(est): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
    path = os.path.join(out, f"{name}.onnx")
    with open(path, "wb") as f:
        f.write(onx.SerializeToString())
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    results = sess.run(None, {sess.get_inputs()[0].name: rows.astype(dtype)})
    models[name] = {
        "file": path,
        "input": sess.get_inputs()[0].name,
        "datatype": "FP32" if dtype == np.float32 else "FP64",
        "rows": rows.tolist(),
        "outputs": {o.name: r.tolist() for o, r in zip(sess.get_outputs(), results)},
    }
with open(os.path.join(out, "expected.json"), "w") as f:
    json.dump(models, f)
