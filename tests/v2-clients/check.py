"""The official Open Inference Protocol HTTP client (tritonclient.http) against modelship-server,
unchanged: health, metadata, and inference with binary and JSON tensors in both directions."""
import sys

import numpy as np
import tritonclient.http as httpclient

passed = failed = 0


def check(what, ok):
    global passed, failed
    passed, failed = passed + bool(ok), failed + (not ok)
    print(f"{'ok  ' if ok else 'FAIL'} {what}")


client = httpclient.InferenceServerClient(url=sys.argv[1])
check("is_server_live", client.is_server_live())
check("is_server_ready", client.is_server_ready())
check("is_model_ready", client.is_model_ready("iris"))
meta = client.get_model_metadata("iris")
check("model metadata input shape [-1, 4]", meta["inputs"][0]["shape"] == [-1, 4])
check("model metadata outputs", [o["name"] for o in meta["outputs"]] == ["predict", "predict_proba"])
check("server metadata", client.get_server_metadata()["name"] == "modelship-server")

x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
for dtype, triton in ((np.float32, "FP32"), (np.float64, "FP64")):
    for binary_in in (True, False):
        for binary_out in (True, False):
            inp = httpclient.InferInput("input-0", list(x.shape), triton)
            inp.set_data_from_numpy(x.astype(dtype), binary_data=binary_in)
            outs = [httpclient.InferRequestedOutput("predict", binary_data=binary_out),
                    httpclient.InferRequestedOutput("predict_proba", binary_data=binary_out)]
            r = client.infer("iris", [inp], outputs=outs, request_id="req-7")
            what = f"infer {triton} binary_in={binary_in} binary_out={binary_out}"
            check(f"{what}: predict", r.as_numpy("predict").tolist() == [0, 2])
            proba = r.as_numpy("predict_proba")
            check(f"{what}: predict_proba", proba.shape == (2, 3) and np.allclose(proba.sum(axis=1), 1.0))
            check(f"{what}: id and version", r.get_response()["id"] == "req-7" and r.get_response()["model_version"] == "v1")

inp = httpclient.InferInput("input-0", [1, 4], "FP32")
inp.set_data_from_numpy(np.array([[5.9, 3.0, 5.1, 1.8]], dtype=np.float32))
r = client.infer("iris", [inp])
check("infer with no outputs named returns predict", r.as_numpy("predict").tolist() == [2])

try:
    bad = httpclient.InferInput("input-0", [1, 3], "FP32")
    bad.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.float32))
    client.infer("iris", [bad])
    check("a wrong shape is refused", False)
except httpclient.InferenceServerException as e:
    check(f"a wrong shape is refused with the server's message ({e.message()})", "expected 4 features" in e.message())

print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
