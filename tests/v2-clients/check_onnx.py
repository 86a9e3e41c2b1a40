"""tritonclient.http, unchanged, against modelship-server serving an ONNX model: metadata shows the
graph's tensors, and inference by the graph's names with binary and JSON tensors in both directions
matches onnxruntime. Usage: check_onnx.py URL EXPECTED.json MODEL_KEY"""
import json
import sys

import numpy as np
import tritonclient.http as httpclient

passed = failed = 0


def check(what, ok):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(f"{'ok  ' if ok else 'FAIL'} {what}")


url, expected, key = sys.argv[1:4]
want = json.load(open(expected))[key]
client = httpclient.InferenceServerClient(url=url)
check(f"{key}: is_model_ready", client.is_model_ready("m"))
meta = client.get_model_metadata("m")
check(f"{key}: metadata input {want['input']} {want['datatype']} [-1, 4]",
      meta["inputs"] == [{"name": want["input"], "datatype": want["datatype"], "shape": [-1, 4]}])
check(f"{key}: metadata outputs", [o["name"] for o in meta["outputs"]] == list(want["outputs"]))

x = np.array(want["rows"], dtype=np.float32 if want["datatype"] == "FP32" else np.float64)
for binary_in in (True, False):
    for binary_out in (True, False):
        inp = httpclient.InferInput(want["input"], list(x.shape), want["datatype"])
        inp.set_data_from_numpy(x, binary_data=binary_in)
        outs = [httpclient.InferRequestedOutput(name, binary_data=binary_out) for name in want["outputs"]]
        r = client.infer("m", [inp], outputs=outs, request_id="onnx-1")
        what = f"{key}: infer binary_in={binary_in} binary_out={binary_out}"
        for name, values in want["outputs"].items():
            got = r.as_numpy(name)
            ok = got is not None and got.shape == np.array(values).shape and np.allclose(got, values, rtol=0, atol=1e-5)
            check(f"{what}: {name} as onnxruntime", ok)
        check(f"{what}: id", r.get_response()["id"] == "onnx-1")

try:
    bad = httpclient.InferInput(want["input"], [1, 4], "INT64")
    bad.set_data_from_numpy(np.array([[1, 2, 3, 4]], dtype=np.int64))
    client.infer("m", [bad])
    check(f"{key}: a wrong datatype is refused", False)
except httpclient.InferenceServerException as e:
    check(f"{key}: a wrong datatype is refused with the server's message ({e.message()})", "datatype INT64 given" in e.message())

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
