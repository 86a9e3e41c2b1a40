"""The pandas + scikit-learn batch baseline: read CSV, predict, write CSV."""
import sys
import time

import joblib
import pandas as pd

model_path, inp, out = sys.argv[1:4]
start = time.perf_counter()
model = joblib.load(model_path)
df = pd.read_csv(inp)
df["prediction"] = model.predict(df[["sepal_length", "sepal_width", "petal_length", "petal_width"]].to_numpy())
df.to_csv(out, index=False)
print(f"pandas: {len(df)} rows in {time.perf_counter() - start:.2f}s")
