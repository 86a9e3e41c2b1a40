//! MLflow's REST API as the operator and the server both use it: the request URLs, the response
//! bodies, where an artifact location is downloaded from, and the `MLmodel` file. No I/O here.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Why an MLflow answer or file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MlflowError {
    #[error(
        "artifact location {0:?} cannot be downloaded over HTTP: run the tracking server with --serve-artifacts \
         (mlflow-artifacts:/ locations) or store artifacts at an http(s):// location"
    )]
    ArtifactScheme(String),
    #[error("the MLmodel file is not valid YAML: {0}")]
    MlModelYaml(String),
    #[error("MLmodel flavor {found} is not served by Modelship (flavors in the file: {all}); supported: sklearn, onnx")]
    Flavor { found: String, all: String },
    #[error("MLmodel: the {0} flavor has no {1}")]
    MissingField(&'static str, &'static str),
    #[error("MLmodel: the signature's inputs are not valid: {0}")]
    Signature(String),
}

/// `GET {tracking}/api/2.0/mlflow/{endpoint}?query`, with the query values percent-encoded.
pub fn api_url(tracking: &str, endpoint: &str, query: &[(&str, &str)]) -> String {
    let mut url = format!("{}/api/2.0/mlflow/{endpoint}", tracking.trim_end_matches('/'));
    for (i, (k, v)) in query.iter().enumerate() {
        url.push(if i == 0 { '?' } else { '&' });
        url.push_str(k);
        url.push('=');
        url.push_str(&percent_encode(v));
    }
    url
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The HTTP URL of `file` inside the artifact directory `artifact_uri`: `mlflow-artifacts:/PATH`
/// goes through the tracking server's artifact proxy, `http(s)://` is fetched as it is.
pub fn artifact_url(tracking: &str, artifact_uri: &str, file: &str) -> Result<String, MlflowError> {
    let join = |base: &str| format!("{}/{}", base.trim_end_matches('/'), file.trim_start_matches('/'));
    if let Some(rest) = artifact_uri.strip_prefix("mlflow-artifacts:") {
        let proxy = "api/2.0/mlflow-artifacts/artifacts";
        // `mlflow-artifacts://HOST:PORT/PATH` names another server; `mlflow-artifacts:/PATH` this one.
        let base = match rest.strip_prefix("//") {
            Some(hosted) => {
                let (host, path) = hosted.split_once('/').unwrap_or((hosted, ""));
                format!("http://{host}/{proxy}/{path}")
            }
            None => format!("{}/{proxy}/{}", tracking.trim_end_matches('/'), rest.trim_start_matches('/')),
        };
        return Ok(join(&base));
    }
    if artifact_uri.starts_with("http://") || artifact_uri.starts_with("https://") {
        return Ok(join(artifact_uri));
    }
    Err(MlflowError::ArtifactScheme(artifact_uri.to_string()))
}

/// Whether two URLs have the same scheme, host and port. Credentials for a tracking server go
/// only to it (its REST API and its artifact proxy), never to an artifact location elsewhere
/// that a model version's source names.
pub fn same_origin(a: &str, b: &str) -> bool {
    origin(a) == origin(b)
}

/// `scheme://host:port` of a URL, lower-cased (what a browser calls its origin).
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase())
}

/// An error body of the MLflow REST API.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub message: String,
}

/// `registered-models/alias` and `model-versions/get`.
#[derive(Debug, Deserialize)]
pub struct ModelVersionBody {
    pub model_version: ModelVersion,
}

/// A registered model version.
#[derive(Debug, Deserialize)]
pub struct ModelVersion {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub source: Option<String>,
}

/// `model-versions/get-download-uri`.
#[derive(Debug, Deserialize)]
pub struct DownloadUriBody {
    pub artifact_uri: String,
}

/// `runs/get`.
#[derive(Debug, Deserialize)]
pub struct RunBody {
    pub run: Run,
}

#[derive(Debug, Deserialize)]
pub struct Run {
    pub info: RunInfo,
    #[serde(default)]
    pub outputs: RunOutputs,
}

/// The models a run logged (MLflow 3: `log_model` makes a LoggedModel whose artifacts live
/// outside the run's own artifact directory).
#[derive(Debug, Default, Deserialize)]
pub struct RunOutputs {
    #[serde(default)]
    pub model_outputs: Vec<ModelOutput>,
}

#[derive(Debug, Deserialize)]
pub struct ModelOutput {
    pub model_id: String,
}

/// `logged-models/{model_id}`.
#[derive(Debug, Deserialize)]
pub struct LoggedModelBody {
    pub model: LoggedModel,
}

#[derive(Debug, Deserialize)]
pub struct LoggedModel {
    pub info: LoggedModelInfo,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LoggedModelInfo {
    pub name: String,
    pub artifact_uri: String,
}

/// `GET logged-models/{id}`: the model ids come from MLflow, but are still encoded as one path segment.
pub fn logged_model_url(tracking: &str, model_id: &str) -> String {
    format!("{}/api/2.0/mlflow/logged-models/{}", tracking.trim_end_matches('/'), percent_encode(model_id))
}

/// The artifact directory `runs:/RUN_ID/PATH` names, as MLflow's own client resolves it: when
/// the run logged a model named PATH's first segment (MLflow 3), that model's artifacts (and
/// the rest of PATH inside them); otherwise PATH inside the run's artifacts (MLflow 2).
pub fn run_model_dir(run: &Run, path: &str, logged: &[LoggedModelInfo]) -> String {
    let path = path.trim_matches('/');
    let (first, rest) = path.split_once('/').unwrap_or((path, ""));
    let join = |base: &str, rest: &str| {
        let base = base.trim_end_matches('/');
        if rest.is_empty() { base.to_string() } else { format!("{base}/{rest}") }
    };
    match logged.iter().find(|m| m.name == first) {
        Some(m) => join(&m.artifact_uri, rest),
        None => join(&run.info.artifact_uri, path),
    }
}

#[derive(Debug, Deserialize)]
pub struct RunInfo {
    pub artifact_uri: String,
}

/// The parts of an `MLmodel` file Modelship reads.
#[derive(Debug, Deserialize)]
pub struct MlModel {
    #[serde(default)]
    pub flavors: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub signature: Option<Signature>,
}

/// `signature:` of an `MLmodel` file; MLflow stores `inputs` as a JSON string.
#[derive(Debug, Deserialize)]
pub struct Signature {
    #[serde(default)]
    pub inputs: Option<String>,
}

/// The flavor Modelship serves a model with, and its file in the artifact directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flavor {
    Sklearn(SklearnFlavor),
    /// `mlflow.onnx`: the ModelProto file (`data:`).
    Onnx {
        file: String,
    },
}

/// How the sklearn flavor stores the estimator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SklearnFlavor {
    /// The model file, relative to the artifact directory (e.g. `model.pkl`).
    pub file: String,
    /// `pickle`, `cloudpickle` or `skops`.
    pub serialization: String,
}

/// The input columns of a signature: names when it is column-based, else only their count.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SignatureInputs {
    pub names: Vec<String>,
    pub count: Option<usize>,
}

impl MlModel {
    /// Parses an `MLmodel` file.
    pub fn parse(text: &str) -> Result<Self, MlflowError> {
        serde_yaml::from_str(text).map_err(|e| MlflowError::MlModelYaml(e.to_string()))
    }

    /// The flavor shown in status: `sklearn` or `onnx` when present (in that order), else the
    /// first that is not the generic `python_function`.
    pub fn flavor_name(&self) -> String {
        if let Some(served) = ["sklearn", "onnx"].into_iter().find(|f| self.flavors.contains_key(*f)) {
            return served.into();
        }
        let mut names = self.flavors.keys().filter(|k| *k != "python_function");
        names.next().or_else(|| self.flavors.keys().next()).cloned().unwrap_or_else(|| "none".into())
    }

    /// The flavor to serve (sklearn first, then onnx), or why the model cannot be served.
    pub fn servable(&self) -> Result<Flavor, MlflowError> {
        let field = |flavor: &serde_yaml::Value, k: &str| flavor.get(k).and_then(|v| v.as_str()).map(str::to_string);
        if let Some(flavor) = self.flavors.get("sklearn") {
            return Ok(Flavor::Sklearn(SklearnFlavor {
                file: field(flavor, "pickled_model").ok_or(MlflowError::MissingField("sklearn", "pickled_model"))?,
                serialization: field(flavor, "serialization_format").unwrap_or_else(|| "cloudpickle".into()),
            }));
        }
        if let Some(flavor) = self.flavors.get("onnx") {
            return Ok(Flavor::Onnx { file: field(flavor, "data").ok_or(MlflowError::MissingField("onnx", "data"))? });
        }
        let all = self.flavors.keys().cloned().collect::<Vec<_>>().join(", ");
        Err(MlflowError::Flavor { found: self.flavor_name(), all })
    }

    /// The signature's inputs, if the model was logged with one.
    pub fn inputs(&self) -> Result<Option<SignatureInputs>, MlflowError> {
        let Some(text) = self.signature.as_ref().and_then(|s| s.inputs.as_deref()) else {
            return Ok(None);
        };
        let specs: Vec<serde_json::Value> =
            serde_json::from_str(text).map_err(|e| MlflowError::Signature(e.to_string()))?;
        // A tensor signature: one spec whose shape is [-1, FEATURES].
        if let [spec] = specs.as_slice()
            && spec["type"] == "tensor"
        {
            let count = spec["tensor-spec"]["shape"].get(1).and_then(|d| d.as_u64()).map(|d| d as usize);
            return Ok(Some(SignatureInputs { names: vec![], count }));
        }
        let names = specs
            .iter()
            .map(|s| s["name"].as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| MlflowError::Signature("a column has no name".into()))?;
        Ok(Some(SignatureInputs { count: Some(names.len()), names }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert!(same_origin("http://MLflow.svc:5000", "http://mlflow.svc:5000/api/2.0/mlflow/x?name=a"));
        assert!(same_origin("http://h:5000?x=1", "http://h:5000/"));
        assert!(!same_origin("http://h:5000", "https://h:5000"));
        assert!(!same_origin("http://h:5000", "http://h:5001/x"));
        assert!(!same_origin("http://h:5000", "http://h:5000.evil.example/x"));
        assert!(!same_origin("http://h:5000", "http://files.example/h:5000"));
    }

    const MLMODEL: &str = r#"
artifact_path: model
flavors:
  python_function:
    env: {conda: conda.yaml, virtualenv: python_env.yaml}
    loader_module: mlflow.sklearn
    model_path: model.pkl
    predict_fn: predict
    python_version: 3.11.7
  sklearn:
    code: null
    pickled_model: model.pkl
    serialization_format: cloudpickle
    sklearn_version: 1.9.1
mlflow_version: 3.17.2
signature:
  inputs: '[{"type": "double", "name": "sepal length (cm)", "required": true}, {"type": "double", "name": "petal width (cm)", "required": true}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
"#;

    #[test]
    fn reads_the_sklearn_flavor_and_signature() {
        let m = MlModel::parse(MLMODEL).unwrap();
        assert_eq!(m.flavor_name(), "sklearn");
        assert_eq!(
            m.servable().unwrap(),
            Flavor::Sklearn(SklearnFlavor { file: "model.pkl".into(), serialization: "cloudpickle".into() })
        );
        let inputs = m.inputs().unwrap().unwrap();
        assert_eq!(inputs.names, ["sepal length (cm)", "petal width (cm)"]);
        assert_eq!(inputs.count, Some(2));
    }

    #[test]
    fn refuses_other_flavors_by_name() {
        let m = MlModel::parse("flavors:\n  python_function:\n    loader_module: my_model\n").unwrap();
        let e = m.servable().unwrap_err().to_string();
        assert!(e.contains("flavor python_function is not served") && e.contains("supported: sklearn, onnx"), "{e}");
        let onnx = MlModel::parse("flavors:\n  onnx:\n    data: model.onnx\n  python_function: {}\n").unwrap();
        assert_eq!(
            (onnx.flavor_name(), onnx.servable().unwrap()),
            ("onnx".into(), Flavor::Onnx { file: "model.onnx".into() })
        );
        let e = MlModel::parse("flavors:\n  onnx: {}\n").unwrap().servable().unwrap_err().to_string();
        assert_eq!(e, "MLmodel: the onnx flavor has no data");
        let tensor = r#"{"flavors": {}, "signature": {"inputs": "[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float64\", \"shape\": [-1, 4]}}]"}}"#;
        assert_eq!(MlModel::parse(tensor).unwrap().inputs().unwrap().unwrap().count, Some(4));
    }

    #[test]
    fn a_run_path_names_the_logged_model_of_that_name_else_the_run_artifacts() {
        let run: RunBody = serde_json::from_str(
            r#"{"run": {"info": {"artifact_uri": "mlflow-artifacts:/0/r1/artifacts"},
                        "outputs": {"model_outputs": [{"model_id": "m-1", "step": 0}]}}}"#,
        )
        .unwrap();
        assert_eq!(run.run.outputs.model_outputs[0].model_id, "m-1");
        let logged =
            [LoggedModelInfo { name: "model".into(), artifact_uri: "mlflow-artifacts:/0/models/m-1/artifacts".into() }];
        assert_eq!(run_model_dir(&run.run, "model", &logged), "mlflow-artifacts:/0/models/m-1/artifacts");
        assert_eq!(run_model_dir(&run.run, "model/sub/", &logged), "mlflow-artifacts:/0/models/m-1/artifacts/sub");
        assert_eq!(run_model_dir(&run.run, "other", &logged), "mlflow-artifacts:/0/r1/artifacts/other");
        let mlflow2: RunBody = serde_json::from_str(r#"{"run": {"info": {"artifact_uri": "s3://b/r/"}}}"#).unwrap();
        assert_eq!(run_model_dir(&mlflow2.run, "model", &[]), "s3://b/r/model");
        assert_eq!(logged_model_url("http://t:5000/", "m-1"), "http://t:5000/api/2.0/mlflow/logged-models/m-1");
    }

    #[test]
    fn artifact_locations_map_to_http() {
        let t = "http://127.0.0.1:5000/";
        assert_eq!(
            artifact_url(t, "mlflow-artifacts:/1/models/m-1/artifacts", "MLmodel").unwrap(),
            "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts/MLmodel"
        );
        assert_eq!(
            artifact_url(t, "mlflow-artifacts://mlf:80/0/r/artifacts/model", "model.pkl").unwrap(),
            "http://mlf:80/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts/model/model.pkl"
        );
        assert_eq!(artifact_url(t, "https://h/a/", "MLmodel").unwrap(), "https://h/a/MLmodel");
        assert!(artifact_url(t, "s3://bucket/x", "MLmodel").unwrap_err().to_string().contains("--serve-artifacts"));
        assert_eq!(
            api_url(t, "registered-models/alias", &[("name", "my model"), ("alias", "champion")]),
            "http://127.0.0.1:5000/api/2.0/mlflow/registered-models/alias?name=my%20model&alias=champion"
        );
    }
}
