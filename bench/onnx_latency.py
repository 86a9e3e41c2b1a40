"""In-process latency, tract (modelship-server's ONNX runtime) vs onnxruntime, on skl2onnx exports
of the bench's forest (RandomForestClassifier, 100 trees, max_depth 10, 20 features) and a small
MLPClassifier. Run with the ONNX test venv: $(server/tests/onnx/venv) bench/onnx_latency.py
[--bin ONNX_LATENCY_EXAMPLE] [--rows N] [--repeats N]. Without --bin it builds and runs
`cargo run --release --example onnx_latency` for the tract side (MODELSHIP_BENCH_PROFILE=dev: a
dev build instead); bench/run passes the example it built.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
from skl2onnx import to_onnx
from sklearn.ensemble import RandomForestClassifier
from sklearn.neural_network import MLPClassifier

rng = np.random.RandomState(0)
X = rng.randn(5000, 20).astype(np.float32)
y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
MODELS = {
    "forest": RandomForestClassifier(n_estimators=100, max_depth=10, random_state=0),
    "mlp": MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=200, random_state=0),
}


def ort_latency(onx, rows, repeats):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(onx.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    single, batch = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        for r in rows:
            sess.run(None, {name: r[None, :]})
        single.append((time.perf_counter() - start) / len(rows))
        start = time.perf_counter()
        sess.run(None, {name: rows})
        batch.append((time.perf_counter() - start) / len(rows))
    return {"single_row_us": float(np.median(single) * 1e6), "batch_per_row_us": float(np.median(batch) * 1e6)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="the onnx_latency example (default: cargo run it)")
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    work = tempfile.mkdtemp(prefix="modelship-onnx-bench-")
    rows = X[-args.rows:]
    with open(os.path.join(work, "rows.json"), "w") as f:
        json.dump(rows.astype(float).tolist(), f)
    report = {}
    for name, est in MODELS.items():
        est.fit(X[:-args.rows], y[:-args.rows])
        onx = to_onnx(est, X[:1], options={id(est): {"zipmap": False}}, target_opset={"": 17, "ai.onnx.ml": 3})
        path = os.path.join(work, f"{name}.onnx")
        with open(path, "wb") as f:
            f.write(onx.SerializeToString())
        # MODELSHIP_BENCH_PROFILE=dev skips the long release build (tract's kernels are still
        # optimised in dev, see the root Cargo.toml; the rest is not, so tract looks slower).
        profile = ["--release"] if os.environ.get("MODELSHIP_BENCH_PROFILE", "release") == "release" else []
        cmd = [args.bin] if args.bin else ["cargo", "run", "-q", *profile, "-p", "modelship-server", "--example", "onnx_latency", "--"]
        tract = subprocess.run(cmd + [path, os.path.join(work, "rows.json"), str(args.repeats)],
                               cwd=root, check=True, capture_output=True, text=True)
        ours = json.loads(tract.stdout.strip().splitlines()[-1])
        theirs = ort_latency(onx, rows, args.repeats)
        report[name] = {
            "tract": ours,
            "onnxruntime": theirs,
            "single_row_ratio_ort_over_tract": theirs["single_row_us"] / ours["single_row_us"],
            "batch_ratio_ort_over_tract": theirs["batch_per_row_us"] / ours["batch_per_row_us"],
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
