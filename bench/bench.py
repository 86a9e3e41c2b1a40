#!/usr/bin/env python3
"""Modelship vs the Flask + scikit-learn tutorial app, side by side on loopback, in one run.

Prints requests/s, p50/p99 latency, resident memory and cold start for each server, the ratios,
and whether each target is met (exit status 1 if one is not). Called by bench/run.
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BODY = b'{"features":[5.1,3.5,1.4,0.2]}'
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predict_ok(port, path="/predict", body=BODY, expect=b"prediction"):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=1) as r:
            return r.status == 200 and expect in r.read()
    except OSError:
        return False


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


def rss_mib(pid):
    """Resident memory of a process and its children (gunicorn's workers)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, StopIteration):
            pass
    return total / 1024


class Server:
    def __init__(self, name, cmd, env=None, cwd=None, probe=("/predict", BODY, b"prediction"), start_seconds=30):
        """`probe` is the (path, body, expected bytes) of a served prediction; `env` values may hold {port}."""
        self.name, self.cmd, self.env, self.cwd = name, cmd, env, cwd
        self.probe, self.start_seconds = probe, start_seconds
        self.proc = None
        self.port = None

    def start(self, cpus=None):
        """Starts the server (on the given CPUs); returns seconds from spawn to the first served prediction."""
        self.port = free_port()
        cmd = [c.replace("{port}", str(self.port)) for c in self.cmd]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus] + cmd
        env = dict(os.environ, PORT=str(self.port), **{k: v.replace("{port}", str(self.port)) for k, v in (self.env or {}).items()})
        t0 = time.perf_counter()
        # Its own session: `stop` ends the server's workers too (gunicorn's, MLflow's uvicorn).
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        deadline = t0 + self.start_seconds
        while not predict_ok(self.port, *self.probe):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"{self.name} did not serve a prediction: {' '.join(cmd)}")
            time.sleep(0.0005)
        return time.perf_counter() - t0

    def stop(self):
        if self.proc:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.proc.wait()
            # Workers that outlive their parent still hold the group: wait until none is left.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.group_alive():
                time.sleep(0.05)
            self.signal(signal.SIGKILL)
            self.proc = None

    def group_alive(self):
        """Whether a process of the server's group is still running (zombies do not count)."""
        for p in os.listdir("/proc"):
            try:
                with open(f"/proc/{p}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] != "Z" and int(fields[2]) == self.proc.pid:
                return True
        return False

    def signal(self, sig):
        """Sends `sig` to the server's process group; whether any process was left to get it."""
        try:
            os.killpg(self.proc.pid, sig)
            return True
        except ProcessLookupError:
            return False


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def cold_start(server, runs):
    """Median seconds from spawn to the first served prediction over `runs` starts."""
    colds = []
    for _ in range(runs):
        colds.append(server.start())
        server.stop()
    return median(colds)


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def wrk(port, conns, seconds, cpus=None, threads=None, script=os.path.join(HERE, "post.lua"), path="/predict"):
    pin = ["taskset", "-c", cpus] if cpus is not None else []
    threads = threads or min(conns, 2)
    out = subprocess.run(
        pin + ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}{path}"],
        capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {m.group(1): float(m.group(2)) * UNITS[m.group(3)] for m in re.finditer(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50_ms": pct["50"], "p99_ms": pct["99"], "non2xx": int(errors.group(1)) if errors else 0}


def online(args, py):
    model_json = os.path.join(args.work, "iris.json")
    subprocess.run([args.server_bin, "train", "--dataset", "iris", "--algorithm", "logistic", "--out", model_json], check=True,
                   stdout=subprocess.DEVNULL)
    servers = [
        Server("flask", [py, os.path.join(HERE, "flask_app.py")], cwd=HERE),
        Server("gunicorn-2w", [os.path.join(os.path.dirname(py), "gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}",
                               "flask_app:app"], cwd=HERE),
        Server("modelship", [args.server_bin, "serve", "--model", model_json, "--host", "127.0.0.1", "--port", "{port}"]),
        Server("bare-axum", [args.bare_bin, "{port}"]),
    ]
    results = {}
    results["paired"] = paired(args, servers[2], servers[3])
    for s in servers:
        r = {"cold_ms": cold_start(s, args.cold_runs) * 1000}
        # Throughput pass: server and load generator share every core, as on a busy box.
        # Latency pass: load generator on CPU 0, server on CPU 1, so wrk never preempts the server.
        for mode, server_cpus, wrk_cpus in (("throughput", None, None), ("latency", "1", "0")):
            s.start(server_cpus)
            wrk(s.port, 8, 1, wrk_cpus)  # warm up
            for c in (1, 8, 64):
                if mode == "throughput":
                    # Median of three runs: with server and wrk threads sharing both cores, a run's
                    # throughput depends on where the scheduler happens to put them.
                    runs = [wrk(s.port, c, args.seconds) for _ in range(args.throughput_runs)]
                    m = dict(sorted(runs, key=lambda x: x["rps"])[len(runs) // 2])
                    m["non2xx"] = sum(x["non2xx"] for x in runs)
                    m["rps_runs"] = sorted(round(x["rps"]) for x in runs)
                else:
                    # This VM has millisecond hiccups that land in a run's p99 or not; repeat
                    # short runs with one wrk thread and take the medians (spread printed).
                    runs = [wrk(s.port, c, args.latency_seconds, wrk_cpus, threads=1) for _ in range(args.latency_runs)]
                    p99s = sorted(x["p99_ms"] for x in runs)
                    m = {"rps": median([x["rps"] for x in runs]), "p50_ms": median([x["p50_ms"] for x in runs]),
                         "p99_ms": median(p99s), "p99_runs_ms": p99s, "non2xx": sum(x["non2xx"] for x in runs)}
                if m["non2xx"]:
                    raise SystemExit(f"{s.name} answered non-2xx under load: {m}")
                r.setdefault(mode, {})[c] = m
                if "p99_runs_ms" in m:
                    spread = f"  (p99 of {len(m['p99_runs_ms'])} runs: {m['p99_runs_ms'][0]:.3f}..{m['p99_runs_ms'][-1]:.3f})"
                else:
                    spread = f"  (req/s of {len(m['rps_runs'])} runs: {m['rps_runs'][0]}..{m['rps_runs'][-1]})"
                print(f"  {s.name:12} {mode:10} c={c:<3} {m['rps']:>10.0f} req/s  p50 {m['p50_ms']:7.3f} ms  "
                      f"p99 {m['p99_ms']:8.3f} ms{spread}", file=sys.stderr, flush=True)
            if mode == "throughput":
                r["rss_mib"] = rss_mib(s.proc.pid)
            s.stop()
        results[s.name] = r
    return results


def paired(args, a, b, conns=64):
    """Throughput of `a` over `b` in alternating runs, both servers up at once.

    The machine's speed drifts over minutes (other tenants), so runs of one server done in a
    block, then the other's, measure the drift as much as the servers. Each round runs a, then b,
    right after each other; the ratio is the median of the per-round ratios.
    """
    for s in (a, b):
        s.start()
        wrk(s.port, 8, 1)  # warm up
    ratios = []
    try:
        for _ in range(args.paired_rounds):
            ra, rb = wrk(a.port, conns, args.seconds)["rps"], wrk(b.port, conns, args.seconds)["rps"]
            ratios.append(ra / rb)
            print(f"  paired c={conns}: {a.name} {ra:.0f} req/s, {b.name} {rb:.0f} req/s, ratio {ra / rb:.2f}",
                  file=sys.stderr, flush=True)
    finally:
        a.stop()
        b.stop()
    return {"ratio": median(ratios), "ratios": sorted(round(r, 2) for r in ratios)}


def wrk_script(path, body):
    """A wrk script POSTing `body` (JSON bytes)."""
    with open(path, "w") as f:
        f.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\nwrk.headers["Content-Type"] = "application/json"\n')
    return path


def forest_http(args, py, work):
    """Single-row /predict of the forest through HTTP: modelship vs Flask, gunicorn -w 2 and MLServer, one run."""
    row = [round(v, 6) for v in struct.unpack("<20d", open(os.path.join(work, "rows.f64"), "rb").read(160))]
    classic = json.dumps({"features": row}).encode()
    v2 = json.dumps({"inputs": [{"name": "x", "shape": [1, 20], "datatype": "FP64", "data": row}]}).encode()
    pkl = os.path.join(work, "forest.pkl")
    flask_env = {"MODEL_PKL": pkl}
    servers = [
        (Server("flask", [py, os.path.join(HERE, "flask_app.py")], env=flask_env, cwd=HERE, probe=("/predict", classic, b"prediction")),
         classic, "/predict"),
        (Server("gunicorn-2w", [os.path.join(os.path.dirname(py), "gunicorn"), "-w", "2", "-b", "127.0.0.1:{port}", "flask_app:app"],
                env=flask_env, cwd=HERE, probe=("/predict", classic, b"prediction")), classic, "/predict"),
        (Server("modelship", [args.server_bin, "serve", "--model", pkl, "--host", "127.0.0.1", "--port", "{port}"],
                probe=("/predict", classic, b"prediction")), classic, "/predict"),
    ]
    if args.mlserver:
        # MLServer reads model-settings.json from the folder it is started on; the same forest.pkl.
        ms_dir = os.path.join(work, "mlserver")
        os.makedirs(ms_dir, exist_ok=True)
        with open(os.path.join(ms_dir, "model-settings.json"), "w") as f:
            json.dump({"name": "forest", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": pkl}}, f)
        env = {"MLSERVER_HOST": "127.0.0.1", "MLSERVER_HTTP_PORT": "{port}", "MLSERVER_GRPC_PORT": str(free_port()), "MLSERVER_METRICS_PORT": str(free_port())}
        path = "/v2/models/forest/infer"
        servers.append((Server("mlserver", [args.mlserver, "start", ms_dir], env=env, cwd=ms_dir, probe=(path, v2, b"outputs"),
                               start_seconds=120), v2, path))
    return measure_http(args, work, "forest", servers, (1, 8, 64), args.forest_runs)


def measure_http(args, work, label, servers, conns, runs_per):
    """Throughput and latency of each (Server, body, path) at each connection count (median of
    `runs_per` runs), then its resident memory; one server up at a time."""
    results = {}
    for s, body, path in servers:
        script = wrk_script(os.path.join(work, f"post-{label}-{s.name}.lua"), body)
        s.start()
        try:
            wrk(s.port, 8, 1, script=script, path=path)  # warm up
            r = {}
            for c in conns:
                runs = sorted((wrk(s.port, c, args.seconds, script=script, path=path) for _ in range(runs_per)),
                              key=lambda x: x["rps"])
                m = runs[len(runs) // 2]
                if any(x["non2xx"] for x in runs):
                    raise SystemExit(f"{s.name} answered non-2xx under load: {runs}")
                r[c] = m
                print(f"  {label} {s.name:12} c={c:<3} {m['rps']:>10.0f} req/s  p50 {m['p50_ms']:8.3f} ms  p99 {m['p99_ms']:8.3f} ms",
                      file=sys.stderr, flush=True)
            results[s.name] = {"throughput": r, "rss_mib": rss_mib(s.proc.pid)}
        finally:
            s.stop()
    return results


def mlflow_serving(args, work):
    """The tutorial's model, logged and registered in a real MLflow tracking server, served from the
    registry by `mlflow models serve` and by modelship: throughput at 64 connections, memory and
    cold start (spawn to the first served prediction, the registry download included on both sides)."""
    d = os.path.join(work, "mlflow")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    server_ctl = os.path.join(ROOT, "tests", "mlflow", "server")
    port = free_port()
    subprocess.run([server_ctl, "start", d, str(port)], check=True)
    try:
        tracking = f"http://127.0.0.1:{port}"
        out = subprocess.run([args.mlflow_python, os.path.join(ROOT, "tests", "mlflow", "register.py"), "log", tracking, "iris",
                              "skops"], check=True, capture_output=True, text=True).stdout
        reg = json.loads(out.strip().splitlines()[-1])  # MLflow prints its run links first
        model = f"models:/iris/{reg['version']}"
        row, want = reg["rows"][0], reg["predictions"][0]
        classic = json.dumps({"features": row}).encode()
        invocation = json.dumps({"dataframe_split": {"columns": reg["features"], "data": [row]}}).encode()
        mlflow_bin = os.path.join(os.path.dirname(args.mlflow_python), "mlflow")
        # --env-manager local: serve from the venv MLflow runs in (the default, virtualenv, builds a
        # new environment from the model's requirements with pyenv); every other setting is MLflow's default.
        theirs = Server("mlflow-serve", [mlflow_bin, "models", "serve", "-m", model, "--env-manager", "local", "-h", "127.0.0.1",
                                         "-p", "{port}"],
                        # The venv's bin on PATH, as when it is activated: MLflow starts `uvicorn` by name.
                        env={"MLFLOW_TRACKING_URI": tracking, "PATH": f"{os.path.dirname(mlflow_bin)}:{os.environ['PATH']}"},
                        probe=("/invocations", invocation, b"predictions"), start_seconds=180)
        ours = Server("modelship", [args.server_bin, "serve", "--model", model, "--mlflow-tracking-uri", tracking,
                                    "--host", "127.0.0.1", "--port", "{port}"], probe=("/predict", classic, b"prediction"))
        for s, path, body, key in ((theirs, "/invocations", invocation, "predictions"), (ours, "/predict", classic, "prediction")):
            s.start()
            try:
                got = json.loads(post(s.port, path, body))[key]
            finally:
                s.stop()
            if got != [want]:
                raise SystemExit(f"{s.name} predicted {got} for {row}; scikit-learn predicts [{want}]")
        colds = {s.name: cold_start(s, args.cold_runs) for s in (theirs, ours)}
        results = measure_http(args, work, "mlflow", [(theirs, invocation, "/invocations"), (ours, classic, "/predict")], (64,), 3)
        for name, cold in colds.items():
            results[name]["cold_ms"] = cold * 1000
            print(f"  mlflow {name:12} cold start {cold * 1000:9.1f} ms", file=sys.stderr, flush=True)
        return results
    finally:
        subprocess.run([server_ctl, "stop", d], check=False)


def forest_latency(args, py, work):
    """In-process ns per single-row predict: the native reader (Rust example) vs scikit-learn and onnxruntime."""
    out = subprocess.run([args.latency_bin, os.path.join(work, "forest.pkl"), os.path.join(work, "rows.f64"),
                          str(args.latency_calls), str(args.latency_runs)], check=True, capture_output=True, text=True).stdout
    native = json.loads(out)
    out = subprocess.run([py, os.path.join(HERE, "forest_latency.py"), work, str(max(args.latency_calls // 20, 10)),
                          str(args.latency_calls), str(args.latency_runs)], check=True, capture_output=True, text=True).stdout
    theirs = json.loads(out)
    if theirs["onnx_agreement"] < 0.99:
        raise SystemExit(f"the ONNX export predicts other classes than scikit-learn on {1 - theirs['onnx_agreement']:.1%} of rows")
    r = {"modelship": native, **theirs}
    for k in ("modelship", "onnxruntime", "sklearn"):
        print(f"  forest in-process {k:12} {r[k]['ns_per_row'] / 1000:10.1f} us/row", file=sys.stderr, flush=True)
    return r


def forest_rows_csv(py, work, rows):
    """rows x 20 features (header x0..x19, the names modelship gives a model fitted on an array), cached in work."""
    path = os.path.join(work, f"forest-{rows}.csv")
    if not os.path.exists(path):
        subprocess.run([py, "-c", f"""
import numpy as np
x = np.random.default_rng(7).normal(0, 2, size=({rows}, 20))
np.savetxt({path + ".tmp"!r}, x, fmt="%.3f", delimiter=",", header=",".join(f"x{{i}}" for i in range(20)), comments="")
"""], check=True)
        os.rename(path + ".tmp", path)
    return path


def run_batch(args, model, csv_in, out, extra=()):
    """Runs `modelship-server batch`; returns (seconds, peak MiB it reports)."""
    t0 = time.perf_counter()
    stdout = subprocess.run([args.server_bin, "batch", "--model", model, "--input", csv_in, "--output", out, *extra], check=True,
                            capture_output=True, text=True).stdout
    # The server reports its own peak RSS (VmHWM); a parent's rusage would include Python's own
    # memory at fork time.
    return time.perf_counter() - t0, float(re.search(r"peak memory ([\d.]+) MiB", stdout).group(1))


def run_pandas(py, model, csv_in, out):
    t0 = time.perf_counter()
    subprocess.run([py, os.path.join(HERE, "batch_pandas.py"), model, csv_in, out], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def prediction_column(path):
    """The last column of a scored CSV, header dropped."""
    with open(path) as f:
        next(f)
        return [line.rstrip("\n").rsplit(",", 1)[-1] for line in f]


def line_count(path):
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def forest_batch(args, py, work):
    """The forest over args.rows rows, modelship vs pandas + scikit-learn; modelship's peak memory at a tenth of them too."""
    big = forest_rows_csv(py, work, args.rows)
    small = os.path.join(work, f"forest-{args.rows // 10}.csv")
    with open(big) as f, open(small, "w") as g:
        g.writelines(next(f) for _ in range(args.rows // 10 + 1))
    pkl = os.path.join(work, "forest.pkl")
    _, peak_small = run_batch(args, pkl, small, os.path.join(work, "forest-out-small.csv"))
    # As a batch Job runs it (every CPU the process may use), and on one thread like scikit-learn's n_jobs=1.
    ours, peak = run_batch(args, pkl, big, os.path.join(work, "forest-out-modelship.csv"))
    one, _ = run_batch(args, pkl, big, os.path.join(work, "forest-out-modelship-1.csv"), ["--threads", "1"])
    theirs = run_pandas(py, pkl, big, os.path.join(work, "forest-out-pandas.csv"))
    outs = ("forest-out-modelship.csv", "forest-out-modelship-1.csv", "forest-out-pandas.csv")
    predictions = [prediction_column(os.path.join(work, f)) for f in outs]
    if [len(p) for p in predictions] != [args.rows] * 3:
        raise SystemExit(f"forest batch outputs have {[len(p) for p in predictions]} rows, expected {args.rows}")
    if not predictions[0] == predictions[1] == predictions[2]:
        differ = sum(a != b for a, b in zip(predictions[0], predictions[2]))
        raise SystemExit(f"forest batch: modelship's predictions differ from scikit-learn's on {differ} rows")
    print(f"  forest batch {args.rows} rows: modelship {ours:.2f}s ({one:.2f}s on one thread; peak {peak:.1f} MiB; "
          f"{peak_small:.1f} MiB at {args.rows // 10} rows), pandas + scikit-learn {theirs:.2f}s, same predictions",
          file=sys.stderr, flush=True)
    return {"rows": args.rows, "modelship_s": ours, "modelship_1thread_s": one, "pandas_s": theirs, "peak_mib": peak,
            "peak_small_mib": peak_small, "small_rows": args.rows // 10}


def batch(args, py, pkl):
    csv_in = os.path.join(args.work, "rows.csv")
    if not os.path.exists(csv_in) or os.path.getsize(csv_in) < args.rows * 10:
        subprocess.run([py, "-c", f"""
import numpy as np
rng = np.random.default_rng(7)
x = rng.normal([5.84, 3.05, 3.76, 1.20], [0.83, 0.43, 1.76, 0.76], size=({args.rows}, 4)).clip(0.1)
np.savetxt({csv_in!r}, x, fmt="%.2f", delimiter=",", header="{','.join(FEATURES)}", comments="")
"""], check=True)
    ours, peak_mib = run_batch(args, os.path.join(args.work, "iris.json"), csv_in, os.path.join(args.work, "out-modelship.csv"))
    theirs = run_pandas(py, pkl, csv_in, os.path.join(args.work, "out-pandas.csv"))
    lines = [line_count(os.path.join(args.work, f)) for f in ("out-modelship.csv", "out-pandas.csv")]
    if lines[0] != lines[1] or lines[0] != args.rows + 1:
        raise SystemExit(f"batch outputs have {lines} lines, expected {args.rows + 1}")
    return {"rows": args.rows, "modelship_s": ours, "pandas_s": theirs, "modelship_peak_mib": peak_mib,
            "input_mib": os.path.getsize(csv_in) / 2**20}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", required=True)
    ap.add_argument("--server-bin", required=True)
    ap.add_argument("--bare-bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--throughput-runs", type=int, default=3)
    ap.add_argument("--paired-rounds", type=int, default=5)
    ap.add_argument("--latency-seconds", type=int, default=3)
    ap.add_argument("--latency-runs", type=int, default=7)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--latency-bin", required=True, help="the forest_latency example")
    ap.add_argument("--mlserver", help="MLServer's mlserver binary (absent: the MLServer target fails)")
    ap.add_argument("--mlserver-missing", default="", help="why MLServer is absent")
    ap.add_argument("--mlflow-python", required=True, help="the python of tests/mlflow/venv (MLflow's server and CLI)")
    ap.add_argument("--onnx-latency-bin", required=True, help="the onnx_latency example (tract's side of bench/onnx_latency.py)")
    ap.add_argument("--forest-runs", type=int, default=3, help="wrk runs per connection count (median) for the forest")
    ap.add_argument("--latency-calls", type=int, default=2000, help="single-row calls per in-process run (scikit-learn: a 20th)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    # This machine sets these for old OpenBLAS builds; they slow a current numpy, so the baseline
    # runs without them, as it would elsewhere.
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        os.environ.pop(k, None)
    pkl = os.path.join(HERE, "model.pkl")
    subprocess.run([args.python, os.path.join(HERE, "train_sklearn.py"), pkl], check=True)

    print(f"online inference, {args.seconds}s per run, wrk on loopback, {os.cpu_count()} cores", file=sys.stderr)
    on = online(args, args.python)
    print(f"batch inference, {args.rows} rows", file=sys.stderr)
    ba = batch(args, args.python, pkl)
    subprocess.run([args.python, os.path.join(HERE, "train_forest.py"), args.work], check=True)
    print(f"RandomForestClassifier single-row /predict, {args.seconds}s per run", file=sys.stderr)
    fh = forest_http(args, args.python, args.work)
    print("RandomForestClassifier in-process single-row predict", file=sys.stderr)
    fl_lat = forest_latency(args, args.python, args.work)
    print("ONNX in-process (tract vs onnxruntime, one thread): the forest and an MLP, reported, no target", file=sys.stderr)
    ox = json.loads(subprocess.run([args.python, os.path.join(HERE, "onnx_latency.py"), "--bin", args.onnx_latency_bin,
                                    "--rows", "200", "--repeats", "3"], check=True, capture_output=True, text=True).stdout)
    print(f"RandomForestClassifier batch, {args.rows} rows", file=sys.stderr)
    fb = forest_batch(args, args.python, args.work)
    print(f"the tutorial's model from an MLflow registry: mlflow models serve vs modelship, {args.seconds}s per run", file=sys.stderr)
    mf = mlflow_serving(args, args.work)

    ms, fl, gu = on["modelship"], on["flask"], on["gunicorn-2w"]
    pair = on.pop("paired")
    print()
    print("throughput pass (all cores shared) and latency pass (wrk on CPU 0, server on CPU 1)")
    print(f"{'server':12} {'c=1 req/s':>10} {'c=8 req/s':>10} {'c=64 req/s':>11} | {'p50@1':>7} {'p99@1':>7} {'p50@8':>7} "
          f"{'p99@8':>7} {'p50@64':>7} {'p99@64':>7} ms | {'RSS MiB':>8} {'cold ms':>8}")
    for name, r in on.items():
        t, l = r["throughput"], r["latency"]
        print(f"{name:12} {t[1]['rps']:>10.0f} {t[8]['rps']:>10.0f} {t[64]['rps']:>11.0f} | {l[1]['p50_ms']:>7.3f} {l[1]['p99_ms']:>7.3f} "
              f"{l[8]['p50_ms']:>7.3f} {l[8]['p99_ms']:>7.3f} {l[64]['p50_ms']:>7.3f} {l[64]['p99_ms']:>7.3f}    | "
              f"{r['rss_mib']:>8.1f} {r['cold_ms']:>8.1f}")
    print(f"\nmodelship / bare axum at c=64 in {len(pair['ratios'])} alternating rounds: {pair['ratios']}")
    print(f"\nbatch: {ba['rows']} rows: modelship {ba['modelship_s']:.2f}s ({ba['rows'] / ba['modelship_s']:.0f} rows/s), "
          f"pandas + scikit-learn {ba['pandas_s']:.2f}s ({ba['rows'] / ba['pandas_s']:.0f} rows/s); "
          f"modelship peak memory {ba['modelship_peak_mib']:.1f} MiB for a {ba['input_mib']:.0f} MiB input")

    print("\nRandomForestClassifier (100 trees, max_depth 10, 20 features), single-row requests, all cores shared")
    print(f"{'server':12} {'c=1 req/s':>10} {'c=8 req/s':>10} {'c=64 req/s':>11} | {'p50@1':>7} {'p99@64':>8} ms | {'RSS MiB':>8}")
    for name, r in fh.items():
        t = r["throughput"]
        print(f"{name:12} {t[1]['rps']:>10.0f} {t[8]['rps']:>10.0f} {t[64]['rps']:>11.0f} | {t[1]['p50_ms']:>7.3f} "
              f"{t[64]['p99_ms']:>8.3f}    | {r['rss_mib']:>8.1f}")
    print("in-process per row: " + ", ".join(f"{k} {fl_lat[k]['ns_per_row'] / 1000:.1f} us" for k in ("modelship", "onnxruntime", "sklearn")))
    for name, r in ox.items():
        print(f"ONNX {name} under tract: {r['tract']['single_row_us']:.1f} us a single row, {r['tract']['batch_per_row_us']:.2f} us "
              f"a row in a batch of 200; onnxruntime {r['onnxruntime']['single_row_us']:.1f} / {r['onnxruntime']['batch_per_row_us']:.2f} us; "
              f"onnxruntime / tract {r['single_row_ratio_ort_over_tract']:.2f} single, {r['batch_ratio_ort_over_tract']:.2f} batch (reported, no target)")
    print(f"batch {fb['rows']} rows: modelship {fb['modelship_s']:.2f}s ({fb['modelship_1thread_s']:.2f}s on one thread, {fb['pandas_s'] / fb['modelship_1thread_s']:.1f}x pandas), pandas + scikit-learn {fb['pandas_s']:.2f}s; modelship peak "
          f"{fb['peak_mib']:.1f} MiB ({fb['peak_small_mib']:.1f} MiB at {fb['small_rows']} rows)")

    print("\nthe tutorial's model registered in MLflow (models:/iris/1), served from the registry, all cores shared")
    print(f"{'server':12} {'c=64 req/s':>11} {'p50@64':>7} {'p99@64':>8} ms | {'RSS MiB':>8} {'cold ms':>8}")
    for name, r in mf.items():
        t = r["throughput"][64]
        print(f"{name:12} {t['rps']:>11.0f} {t['p50_ms']:>7.3f} {t['p99_ms']:>8.3f}    | {r['rss_mib']:>8.1f} {r['cold_ms']:>8.1f}")

    tp = lambda r: r["throughput"][64]["rps"]  # noqa: E731
    mlf, mlo = mf["mlflow-serve"], mf["modelship"]
    fms = tp(fh["modelship"])
    native = fl_lat["modelship"]["ns_per_row"]
    checks = [
        ("throughput c=64 vs Flask", tp(ms) / tp(fl), ">=", 50),
        ("throughput c=64 vs gunicorn 2 workers", tp(ms) / tp(gu), ">=", 10),
        # Paired, alternating runs (see `paired`); the table's blocks of runs drift apart.
        # OPEN: since the server's hardening (admission, timeouts, connection limits) CI measures
        # 0.75-0.78 here; printed on every run as MISS and not a gate until it is back (README).
        ("throughput c=64 vs bare axum (paired)", pair["ratio"], ">=", 0.8, "open"),
        ("p99 latency c=8 vs Flask", ms["latency"][8]["p99_ms"] / fl["latency"][8]["p99_ms"], "<=", 0.2),
        ("resident memory MiB", ms["rss_mib"], "<=", 20),
        ("cold start to first prediction ms", ms["cold_ms"], "<=", 50),
        ("batch rows/s vs pandas", ba["pandas_s"] / ba["modelship_s"], ">=", 2),
        ("batch peak memory MiB (streams, bounded)", ba["modelship_peak_mib"], "<=", 32),
        ("forest c=64 vs Flask", fms / tp(fh["flask"]), ">=", 50),
        ("forest c=64 vs gunicorn 2 workers", fms / tp(fh["gunicorn-2w"]), ">=", 10),
        ("forest c=64 vs MLServer (V2)", fms / tp(fh["mlserver"]) if "mlserver" in fh else float("nan"), ">=", 50),
        ("forest per-row predict vs onnxruntime", fl_lat["onnxruntime"]["ns_per_row"] / native, ">=", 1),
        ("forest per-row predict vs scikit-learn", fl_lat["sklearn"]["ns_per_row"] / native, ">=", 20),
        ("MLflow model c=64 vs mlflow models serve", tp(mlo) / tp(mlf), ">=", 50),
        ("MLflow model RSS vs mlflow models serve", mlo["rss_mib"] / mlf["rss_mib"], "<=", 0.1),
        ("MLflow model cold start vs mlflow models serve", mlo["cold_ms"] / mlf["cold_ms"], "<=", 0.05),
        ("forest batch rows/s vs pandas", fb["pandas_s"] / fb["modelship_s"], ">=", 3),
        (f"forest batch peak MiB {fb['rows']} / {fb['small_rows']} rows", fb["peak_mib"] / fb["peak_small_mib"], "<=", 1.25),
    ]
    if "mlserver" not in fh:
        print(f"\nMLServer was not measured: {args.mlserver_missing or 'no --mlserver given'}")
    print("\ntarget                                   measured      target  result")
    failed = missed = 0
    for name, value, op, target, *open_ in checks:
        ok = value >= target if op == ">=" else value <= target
        result = "PASS" if ok else "MISS (open, not a gate)" if open_ else "FAIL"
        failed += not ok and not open_
        missed += not ok and bool(open_)
        print(f"{name:40} {value:>9.2f}  {op} {target:<6} {result}")
    print(f"bench: {len(checks) - failed - missed} passed, {failed} failed, {missed} open target(s) missed")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"online": on, "paired": pair, "batch": ba, "forest": {"http": fh, "latency": fl_lat, "batch": fb},
                       "mlflow": mf, "onnx": ox}, f,
                      indent=2, default=str)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
