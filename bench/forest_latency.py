"""In-process per-row latency of scikit-learn's and onnxruntime's predict on the bench's forest.

Timed as server/examples/forest_latency.rs times the native reader: CALLS single-row calls per run,
RUNS runs, the median of the runs' mean nanoseconds per call. Prints one JSON object.
Usage: forest_latency.py DIR CALLS_SKLEARN CALLS_ONNX RUNS
"""
import json
import os
import sys
import time

import joblib
import numpy as np
import onnxruntime as ort

work, calls_sk, calls_ort, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
X = np.fromfile(os.path.join(work, "rows.f64"), dtype="<f8").reshape(-1, 20)
X32 = X.astype(np.float32)
model = joblib.load(os.path.join(work, "forest.pkl"))
opts = ort.SessionOptions()
# One thread, as the native reader predicts one row on one thread.
opts.intra_op_num_threads = 1
opts.inter_op_num_threads = 1
sess = ort.InferenceSession(os.path.join(work, "forest.onnx"), opts, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name


def timed(fn, calls):
    per_call = []
    for _ in range(runs):
        t0 = time.perf_counter_ns()
        for i in range(calls):
            r = i % len(X)
            fn(r)
        per_call.append((time.perf_counter_ns() - t0) / calls)
    return {"ns_per_row": sorted(per_call)[len(per_call) // 2], "runs_ns": per_call}


result = {
    "sklearn": timed(lambda r: model.predict(X[r:r + 1]), calls_sk),
    "onnxruntime": timed(lambda r: sess.run(None, {name: X32[r:r + 1]}), calls_ort),
}
# The three readers must agree before their speeds are compared.
onnx_labels = sess.run(None, {name: X32})[0]
agree = float(np.mean(onnx_labels == model.predict(X)))
result["onnx_agreement"] = agree
print(json.dumps(result))
