"""Writes hostile and broken model files for server/tests/sklearn_hostile.rs.

Usage: python hostile.py OUT_DIR MARKER. Every payload, if it ever ran, would create the file
MARKER; `control.pkl` is the same os.system payload for the test to show that Python's own
pickle.load does run it (and `skops_control.skops` that skops.io.load runs it once trusted). The
files are made with real pickle / joblib / skops; hostile skops files edit real ones with zipfile.
"""

import io
import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
from joblib.numpy_pickle import NumpyArrayWrapper
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

out, marker = sys.argv[1], sys.argv[2]
os.makedirs(out, exist_ok=True)


class System:
    def __init__(self, target=marker):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


class Eval:
    def __reduce__(self):
        return (eval, (f"open({marker!r}, 'w')",))


class Popen:
    def __reduce__(self):
        return (subprocess.Popen, (["touch", marker],))


def write(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


rng = np.random.RandomState(0)
X = rng.randn(200, 4)
y = (X[:, 0] + X[:, 1] > 0).astype(int)
model = LogisticRegression().fit(X, y)

write("control.pkl", pickle.dumps(System(marker + ".control"), protocol=2))
write("os_system_p2.pkl", pickle.dumps(System(), protocol=2))
write("os_system_p5.pkl", pickle.dumps(System(), protocol=5))
write("eval.pkl", pickle.dumps(Eval(), protocol=4))
write("popen.pkl", pickle.dumps(Popen(), protocol=5))
# A reference to os.system nested in a list, never called.
write("nested_global.pkl", pickle.dumps([1, 2.0, ["a", os.system]], protocol=3))
# A real fitted estimator whose state carries the payload after allowed globals.
evil_model = LogisticRegression().fit(X, y)
evil_model.coef_ = [evil_model.coef_, System()]
write("estimator_with_payload.pkl", pickle.dumps(evil_model, protocol=5))
buf = io.BytesIO()
joblib.dump(System(), buf)
write("payload.joblib", buf.getvalue())
buf = io.BytesIO()
joblib.dump(System(), buf, compress=3)
write("payload-zlib.joblib", buf.getvalue())

# Wrong protocols.
write("protocol0.pkl", pickle.dumps(model, protocol=0))
write("protocol1.pkl", pickle.dumps(model, protocol=1))

# Good files to truncate and mutate.
tree = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
write("tree.pkl", pickle.dumps(tree, protocol=5))
write("tree_p2.pkl", pickle.dumps(tree, protocol=2))
buf = io.BytesIO()
joblib.dump(tree, buf)
write("tree.joblib", buf.getvalue())
for name, compress in [("zlib", 3), ("gzip", ("gzip", 3)), ("xz", ("xz", 3)), ("lzma", ("lzma", 3))]:
    buf = io.BytesIO()
    joblib.dump(tree, buf, compress=compress)
    write(f"tree-{name}.joblib", buf.getvalue())


def tree_with_nodes(edit):
    """The tree pickled with its node array changed by `edit`."""

    class P(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, Tree):
                cls, args, state = obj.__reduce__()
                nodes = state["nodes"].copy()
                edit(nodes)
                return cls, args, {**state, "nodes": nodes}
            return NotImplemented

    buf = io.BytesIO()
    P(buf, protocol=5).dump(tree)
    return buf.getvalue()


write("tree_child_out_of_range.pkl", tree_with_nodes(lambda n: n["left_child"].__setitem__(0, 9999)))
write("tree_child_cycle.pkl", tree_with_nodes(lambda n: n["right_child"].__setitem__(1, 0)))
write("tree_feature_out_of_range.pkl", tree_with_nodes(lambda n: n["feature"].__setitem__(0, 77)))

# A joblib array wrapper declaring 10^12 x 8 float64 with no bytes behind it.
huge = LogisticRegression().fit(X, y)
huge.coef_ = NumpyArrayWrapper(np.ndarray, (10**12, 8), "C", np.dtype("f8"))
write("huge_shape.joblib", pickle.dumps(huge, protocol=4))

# One tree shared 200,000 times through the pickle memo: a small file that expands enormously.
from sklearn.ensemble import RandomForestClassifier

forest = RandomForestClassifier(n_estimators=2, max_depth=3, random_state=0).fit(X, y)
forest.estimators_ = [forest.estimators_[0]] * 200_000
write("shared_trees.pkl", pickle.dumps(forest, protocol=5))

# Estimators outside the supported list, a part of one on its own, a transformer with nothing to predict.
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

write("svc.pkl", pickle.dumps(SVC().fit(X, y), protocol=5))
write("bare_tree.pkl", pickle.dumps(tree.tree_, protocol=5))
write("scaler_only.joblib", pickle.dumps(StandardScaler().fit(X), protocol=5))

# One tree with 300,000 junk attributes, shared 50,000 times: attribute lookups must stay bounded.
wide = DecisionTreeClassifier(max_depth=2, random_state=0).fit(X, y)
wide.__dict__.update({f"junk{i}": 0 for i in range(300_000)})
forest.estimators_ = [wide] * 50_000
write("wide_shared_trees.pkl", pickle.dumps(forest, protocol=5))

# skops files: written by skops.io.dump, hostile ones by editing a real file's schema.json with zipfile.
import json
import zipfile

import skops.io


def skops_bytes(obj, compression=zipfile.ZIP_STORED):
    return skops.io.dumps(obj, compression=compression)


def rewrite(src, edit_schema=None, edit_entries=None):
    """A copy of the skops file `src` with its schema (and optionally its entries) changed."""
    with zipfile.ZipFile(io.BytesIO(src)) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    schema = json.loads(entries.pop("schema.json"))
    if edit_schema:
        edit_schema(schema)
    if edit_entries:
        edit_entries(entries)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("schema.json", json.dumps(schema))
        for n, b in entries.items():
            z.writestr(n, b)
    return buf.getvalue()


def nodes(schema, loader=None):
    """Every node of a schema (depth first), optionally only those with this loader."""
    stack = [schema]
    while stack:
        n = stack.pop()
        if isinstance(n, dict):
            if "__loader__" in n and (loader is None or n["__loader__"] == loader):
                yield n
            stack.extend(n.values())
        elif isinstance(n, list):
            stack.extend(n)


write("tree.skops", skops_bytes(tree))
write("tree-deflate.skops", skops_bytes(tree, zipfile.ZIP_DEFLATED))
# skops itself writes a function as a FunctionNode: os.system as an attribute, and nested in a list.
evil_model = LogisticRegression().fit(X, y)
evil_model.coef_ = os.system
write("skops_function.skops", skops_bytes(evil_model))
evil_model.coef_ = [1, ["a", eval]]
write("skops_nested_eval.skops", skops_bytes(evil_model))
good = skops_bytes(LogisticRegression().fit(X, y))


def root_class(module, name):
    def edit(s):
        s["__module__"], s["__class__"] = module, name

    return edit


write("skops_eval_class.skops", rewrite(good, root_class("builtins", "eval")))
write("skops_popen_class.skops", rewrite(good, root_class("subprocess", "Popen")))


def loss_calls_system(target):
    """A LossNode's class is what skops calls with its __reduce__ args: os.system("touch target")."""

    def edit(s):
        for n in nodes(s, "LossNode"):
            n["__module__"], n["__class__"] = "posix", "system"
            command = {"__class__": "str", "__module__": "builtins", "__loader__": "JsonNode"}
            command.update(content=json.dumps(f"touch {target}"), is_json=True)
            n["__reduce__"]["args"] = {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode"}
            n["__reduce__"]["args"]["content"] = [command]

    return edit


from sklearn.linear_model import SGDClassifier

sgd = skops_bytes(SGDClassifier().fit(X, y))
write("skops_loss_system.skops", rewrite(sgd, loss_calls_system(marker)))
# The control: skops.io.load runs it once the user trusts posix.system.
write("skops_control.skops", rewrite(sgd, loss_calls_system(marker + ".skops-control")))


def coef_is(node):
    def edit(s):
        s["content"]["content"]["coef_"] = node

    return edit


write("skops_function_node.skops", rewrite(good, coef_is({"__class__": "system", "__module__": "posix", "__loader__": "FunctionNode"})))


def first_array(s):
    return next(n for n in nodes(s, "NdArrayNode") if n.get("type") == "numpy")


def huge_npy(entries):
    for n in entries:
        if n.endswith(".npy"):
            b = io.BytesIO()
            np.lib.format.write_array_header_1_0(b, {"descr": "<f8", "fortran_order": False, "shape": (10**12, 8)})
            entries[n] = b.getvalue()


def short_npy(entries):
    for n in entries:
        if n.endswith(".npy"):
            b = io.BytesIO()
            np.lib.format.write_array_header_1_0(b, {"descr": "<f8", "fortran_order": False, "shape": (1000,)})
            entries[n] = b.getvalue() + bytes(8)


write("skops_huge_shape.skops", rewrite(good, edit_entries=huge_npy))
write("skops_short_array.skops", rewrite(good, edit_entries=short_npy))


def traversal(name):
    def edit(s):
        a = first_array(s)
        a["file"] = name

    def add(entries):
        entries[name] = next(b for n, b in entries.items() if n.endswith(".npy"))

    return edit, add


for label, name in [("dotdot", "../../tmp/evil.npy"), ("absolute", "/etc/evil.npy"), ("subdir", "a/b.npy")]:
    edit, add = traversal(name)
    write(f"skops_path_{label}.skops", rewrite(good, edit, add))
# A file the schema names that is not in the zip.
write("skops_missing_entry.skops", rewrite(good, lambda s: first_array(s).__setitem__("file", "nothere.npy")))

# Zip bombs: a 1.2 GiB array of zeros deflated to about a megabyte, and a zip whose headers
# declare 100 bytes for a 10 MB entry.
with zipfile.ZipFile(io.BytesIO(good)) as src:
    names = src.namelist()
    bomb = next(n for n in names if n.endswith(".npy"))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for n in names:
            if n != bomb:
                z.writestr(n, src.read(n))
        with z.open(bomb, "w", force_zip64=True) as f:
            chunk = bytes(1 << 24)
            for _ in range(77):
                f.write(chunk)
write("skops_bomb.skops", buf.getvalue())

# A schema.json of 65 MiB (spaces), over the schema cap.
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
    z.writestr("schema.json", b" " * (65 << 20))
write("skops_big_schema.skops", buf.getvalue())

buf = io.BytesIO()
big = bytes(10 << 20)
with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
    z.writestr("schema.json", big)
data = bytearray(buf.getvalue())
# Patch the uncompressed size in the local header (offset 22) and the central directory entry.
data[22:26] = (100).to_bytes(4, "little")
cd = data.rfind(b"PK\x01\x02")
data[cd + 24 : cd + 28] = (100).to_bytes(4, "little")
write("skops_lying_size.skops", bytes(data))
