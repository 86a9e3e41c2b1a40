"""Trains the forest of the bench: RandomForestClassifier(100 trees, max_depth 10) on 20 features.

Writes DIR/forest.pkl (joblib.dump, as the tutorials do), DIR/forest.onnx (skl2onnx, zipmap off) and
DIR/rows.f64 (held-out rows as little-endian float64, for the in-process latency runs).
"""
import os
import sys

import joblib
import numpy as np
from skl2onnx import to_onnx
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

out = sys.argv[1]
X, y = make_classification(n_samples=6000, n_features=20, n_informative=12, n_classes=3, random_state=7)
X_train, X_test, y_train, y_test = X[:5000], X[5000:], y[:5000], y[5000:]
model = RandomForestClassifier(n_estimators=100, max_depth=10, n_jobs=1, random_state=7).fit(X_train, y_train)
joblib.dump(model, os.path.join(out, "forest.pkl"))
onx = to_onnx(model, X_train[:1].astype(np.float32), options={id(model): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
with open(os.path.join(out, "forest.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
X_test.astype("<f8").tofile(os.path.join(out, "rows.f64"))
print(f"trained RandomForestClassifier(100 trees, max_depth 10) on 20 features: hold-out accuracy "
      f"{model.score(X_test, y_test):.3f}")
