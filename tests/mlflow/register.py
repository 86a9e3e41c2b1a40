"""Logs and registers the tutorial's iris model in an MLflow tracking server, and moves aliases.

  register.py log TRACKING_URI NAME SERIALIZATION [--broken]
      trains the tutorial's LogisticRegression(max_iter=200) on iris (seeded), logs it with
      mlflow.sklearn.log_model(..., registered_model_name=NAME, serialization_format=SERIALIZATION)
      and prints JSON: version, run_id, the rows and scikit-learn's predictions of them.
      SERIALIZATION onnx logs the same model's skl2onnx export with mlflow.onnx.log_model instead
      (features: [], the graph names its input), pyfunc a pure python_function model (no flavor
      Modelship serves).
      --broken then overwrites the stored model file with garbage (a version that cannot load).
  register.py save-http TRACKING_URI NAME DIR BASE_URL [--columns N]
      saves the same model with mlflow.sklearn.save_model into DIR/NAME-vK (K: the next version)
      and registers it with source BASE_URL/NAME-vK, a plain HTTP artifact location (the tracking
      server must allow the scheme: MLFLOW_ALLOWED_HOST_ADDRESSED_ARTIFACT_SCHEMES=http); prints
      JSON as log does. --columns N records a signature of only the first N columns.
  register.py alias TRACKING_URI NAME ALIAS VERSION
      points NAME@ALIAS at VERSION.
Credentials, if any, come from MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD.
"""
import json
import sys
import warnings

warnings.filterwarnings("ignore")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


def tutorial_model():
    """The tutorial's model, seeded: (model, x_train, x_test, feature names)."""
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    iris = load_iris(as_frame=True)
    x_train, x_test, y_train, _ = train_test_split(iris.data, iris.target, test_size=0.2, random_state=42)
    return LogisticRegression(max_iter=200).fit(x_train, y_train), x_train, x_test, list(iris.data.columns)


def printed(version, run_id, features, model, x_test, model_id=None):
    print(json.dumps({
        "version": version,
        "run_id": run_id,
        "model_id": model_id,
        "features": features,
        "rows": x_test.values.tolist(),
        "predictions": model.predict(x_test).tolist(),
        "probabilities": model.predict_proba(x_test).tolist(),
    }))


def save_http(tracking, name, directory, base_url, columns):
    import os

    from mlflow.models import infer_signature

    model, x_train, x_test, features = tutorial_model()
    client = MlflowClient(tracking)
    if not client.search_registered_models(f"name='{name}'"):
        client.create_registered_model(name)
    version = 1 + max([int(v.version) for v in client.search_model_versions(f"name='{name}'")] or [0])
    cols = x_train.iloc[:, :columns] if columns else x_train
    signature = infer_signature(cols, model.predict(x_train))
    sub = f"{name}-v{version}"
    mlflow.sklearn.save_model(model, os.path.join(directory, sub), serialization_format="skops", signature=signature)
    mv = client.create_model_version(name, source=f"{base_url.rstrip('/')}/{sub}")
    assert int(mv.version) == version, (mv.version, version)
    printed(version, "", list(cols.columns), model, x_test)


def log(tracking, name, serialization, broken):
    import pandas as pd

    model, x_train, x_test, features = tutorial_model()
    mlflow.set_tracking_uri(tracking)
    with mlflow.start_run() as run:
        if serialization == "onnx":
            from skl2onnx import to_onnx

            onx = to_onnx(model, x_train.values[:1].astype("float32"), options={id(model): {"zipmap": False}},
                          target_opset={"": 17, "ai.onnx.ml": 3})
            info = mlflow.onnx.log_model(onx, name="model", registered_model_name=name)
        elif serialization == "pyfunc":

            class Constant(mlflow.pyfunc.PythonModel):
                def predict(self, context, model_input):
                    return [0] * len(model_input)

            info = mlflow.pyfunc.log_model(name="model", python_model=Constant(), registered_model_name=name)
        else:
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                registered_model_name=name,
                serialization_format=serialization,
                input_example=pd.DataFrame(x_train.iloc[:2]),
            )
    client = MlflowClient(tracking)
    version = max(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
    if broken:
        # Replace the stored model file through the artifact API, as a corrupted upload would.
        import tempfile, os

        uri = client.get_model_version_download_uri(name, str(version))
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "model.pkl")
            with open(path, "wb") as f:
                f.write(b"\x80\x05 this is not a pickle")
            mlflow.artifacts.download_artifacts  # noqa: B018 (keeps the import used)
            from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

            get_artifact_repository(uri).log_artifact(path)
    features = [] if serialization == "onnx" else features
    printed(version, run.info.run_id, features, model, x_test, getattr(info, "model_id", None))


def alias(tracking, name, alias_name, version):
    MlflowClient(tracking).set_registered_model_alias(name, alias_name, version)
    print(json.dumps({"alias": alias_name, "version": int(version)}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "log":
        log(args[0], args[1], args[2], "--broken" in args[3:])
    elif cmd == "save-http":
        columns = int(args[args.index("--columns") + 1]) if "--columns" in args else None
        save_http(args[0], args[1], args[2], args[3], columns)
    elif cmd == "alias":
        alias(*args[:4])
    else:
        sys.exit(__doc__)
