"""Trains the baseline: LogisticRegression(max_iter=200) on iris, saved with joblib."""
import sys

import joblib
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=200).fit(X, y)
joblib.dump(model, sys.argv[1])
print(f"trained sklearn LogisticRegression on iris: train accuracy {model.score(X, y):.3f}")
