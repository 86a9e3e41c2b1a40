"""The pandas + scikit-learn batch baseline: read CSV, predict, write CSV (every column is a feature)."""
import sys
import time

import joblib
import pandas as pd

model_path, inp, out = sys.argv[1:4]
start = time.perf_counter()
model = joblib.load(model_path)
if hasattr(model, "n_jobs"):
    model.n_jobs = 1  # the baseline the targets name: scikit-learn on one core
df = pd.read_csv(inp)
df["prediction"] = model.predict(df.to_numpy())
df.to_csv(out, index=False)
print(f"pandas: {len(df)} rows in {time.perf_counter() - start:.2f}s")
