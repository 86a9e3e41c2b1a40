"""Writes hostile and broken model files for server/tests/sklearn_hostile.rs.

Usage: python hostile.py OUT_DIR MARKER. Every payload, if it ever ran, would create the file
MARKER; `control.pkl` is the same os.system payload for the test to show that Python's own
pickle.load does run it. The files are made with real pickle / joblib, not by hand.
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
