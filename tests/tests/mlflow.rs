//! MLflow models (`models:/NAME/VERSION`, `models:/NAME@ALIAS`, `runs:/RUN_ID/PATH`) against a
//! real MLflow tracking server from PyPI (tests/mlflow) and the real API server: a registered
//! pickle is served with scikit-learn's predictions, an alias move rolls out, an outage keeps the
//! model serving, basic auth, the onnx flavor, a flavor Modelship does not serve, and the API
//! server's validation of bad URIs.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::TryStreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use modelship_crds::MLModel;
use modelship_tests::mlflow::{ADMIN, ArtifactHost, Logged, Mlflow, run_container};
use modelship_tests::token_gateway::TokenGateway;
use modelship_tests::{
    Operator, OperatorOptions, TestNamespace, client, install_crd, kubectl_stdin, wait_for, wait_ready,
};

fn apply(ns: &str, name: &str, model: serde_json::Value) {
    let m = serde_json::json!({
        "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel",
        "metadata": {"name": name}, "spec": {"model": model, "replicas": 1},
    });
    kubectl_stdin(&["apply", "-n", ns, "-f", "-"], Some(&m.to_string())).unwrap();
}

fn condition(m: &MLModel, type_: &str) -> Option<(String, String, String)> {
    let c = m.status.as_ref()?.condition(type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until condition `type_` of model `name` has `status`; returns the model, reason and message.
async fn wait_condition(models: &Api<MLModel>, name: &str, type_: &str, status: &str) -> (MLModel, String, String) {
    let what = format!("MLModel {name} {type_}={status}");
    let m = wait_for(&what, Duration::from_secs(90), || async {
        models.get(name).await.ok().filter(|m| condition(m, type_).is_some_and(|c| c.0 == status))
    })
    .await;
    let (_, reason, message) = condition(&m, type_).unwrap();
    (m, reason, message)
}

async fn server_container(c: &kube::Client, ns: &str, name: &str) -> k8s_openapi::api::core::v1::Container {
    let d = Api::<Deployment>::namespaced(c.clone(), ns).get(name).await.unwrap();
    d.spec.unwrap().template.spec.unwrap().containers.remove(0)
}

/// Runs the generated container and checks it predicts exactly what scikit-learn did.
async fn serves_like_sklearn(container: &k8s_openapi::api::core::v1::Container, env: &[(&str, &str)], logged: &Logged) {
    let (mut server, base) = run_container(container, env);
    let http = reqwest::Client::new();
    wait_for("the server's /readyz", Duration::from_secs(30), || async {
        http.get(format!("{base}/readyz")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await;
    let resp = http.post(format!("{base}/predict")).json(&serde_json::json!({"features": logged.rows})).send().await;
    let body: serde_json::Value = resp.unwrap().json().await.unwrap();
    // The same rows by the signature's column names (objects, as a DataFrame's records are).
    let named: Vec<serde_json::Value> = logged
        .rows
        .iter()
        .map(|row| {
            serde_json::Value::Object(logged.features.iter().cloned().zip(row.iter().map(|v| (*v).into())).collect())
        })
        .collect();
    let by_name: serde_json::Value = if logged.features.is_empty() {
        body.clone()
    } else {
        let resp = http.post(format!("{base}/predict")).json(&serde_json::json!({"features": named})).send().await;
        resp.unwrap().json().await.unwrap()
    };
    // V2 metadata names the features as the MLflow signature does.
    let name = container.args.iter().flatten().skip_while(|a| *a != "--name").nth(1).cloned().unwrap_or_default();
    let meta: serde_json::Value =
        http.get(format!("{base}/v2/models/{name}")).send().await.unwrap().json().await.unwrap_or_default();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(body, serde_json::json!({"prediction": logged.predictions}), "scikit-learn's predictions");
    assert_eq!(by_name, body, "rows by the signature's column names");
    if logged.features.is_empty() {
        // An ONNX model: its graph's own input.
        assert_eq!(meta["inputs"][0]["shape"], serde_json::json!([-1, 4]), "{meta}");
    } else {
        assert_eq!(meta["inputs"][0]["parameters"]["feature_names"], serde_json::json!(logged.features), "{meta}");
    }
}

async fn deployment_generation(c: &kube::Client, ns: &str, name: &str) -> Option<i64> {
    Api::<Deployment>::namespaced(c.clone(), ns).get(name).await.ok()?.metadata.generation
}

#[tokio::test]
async fn pinned_and_aliased_mlflow_models_roll_out_and_survive_an_outage() {
    let c = client().await;
    install_crd().await;
    let mlflow = Mlflow::start(false);
    let v1 = mlflow.log_model("iris", "cloudpickle");
    let v2 = mlflow.log_model("iris", "pickle");
    assert_eq!((v1.version, v2.version), (1, 2));
    mlflow.set_alias("iris", "champion", 1);
    let ns = TestNamespace::new(&c, "mlflow").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let registry = serde_json::json!({"trackingURI": mlflow.url, "pollSeconds": 2});

    // A pinned version: Ready, status.model filled, VERSION = the registry version.
    apply(&ns.name, "pinned", serde_json::json!({"uri": "models:/iris/1", "registry": registry}));
    let m = wait_ready(&models, "pinned", Some("1"), Duration::from_secs(90)).await;
    let resolved = m.status.as_ref().unwrap().model.clone().unwrap();
    assert_eq!(resolved.resolved_version.as_deref(), Some("1"));
    assert!(resolved.source.as_deref().unwrap().starts_with("mlflow-artifacts:/"), "{resolved:?}");
    assert_eq!(resolved.flavor.as_deref(), Some("sklearn"));
    let pinned = server_container(&c, &ns.name, "pinned").await;
    let args = pinned.args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--model", "models:/iris/1"]), "{args:?}");
    assert!(args.windows(2).any(|w| w == ["--mlflow-tracking-uri", mlflow.url.as_str()]), "{args:?}");
    serves_like_sklearn(&pinned, &[], &v1).await;

    // An unknown version: Degraded, naming it.
    apply(&ns.name, "missing", serde_json::json!({"uri": "models:/iris/9", "registry": registry}));
    let (_, reason, message) = wait_condition(&models, "missing", "Degraded", "True").await;
    assert_eq!(reason, "RegistryModelNotFound");
    assert!(message.contains("version 9 of registered model iris"), "{message}");

    // An alias: moving it rolls out the new version within one poll.
    apply(&ns.name, "champion", serde_json::json!({"uri": "models:/iris@champion", "registry": registry}));
    wait_ready(&models, "champion", Some("1"), Duration::from_secs(90)).await;
    // Watched from before the move: once status shows version 2 resolved, Ready is False until
    // version 2's rollout is complete, then True.
    let (watching, seen) = ready_while_resolving(&models, "champion", "2");
    watching.wait("the MLModel watch").await;
    mlflow.set_alias("iris", "champion", 2);
    let moved = Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(60), seen).await.expect("rolled out within 60 s").unwrap();
    eprintln!("alias move rolled out and Ready in {:?}: {seen:?}", moved.elapsed());
    assert_eq!(seen.first().map(|s| s.0.as_str()), Some("False"), "Ready False first for version 2: {seen:?}");
    assert_eq!(seen.last().map(|s| s.0.as_str()), Some("True"), "{seen:?}");
    let m = wait_ready(&models, "champion", Some("2"), Duration::from_secs(10)).await;
    assert_eq!(m.status.as_ref().unwrap().model.as_ref().unwrap().resolved_version.as_deref(), Some("2"));
    let champion = server_container(&c, &ns.name, "champion").await;
    assert!(champion.args.clone().unwrap().iter().any(|a| a == "models:/iris/2"));
    serves_like_sklearn(&champion, &[], &v2).await;

    // The tracking server goes away: the model stays Ready on version 2 and says so.
    let generation = deployment_generation(&c, &ns.name, "champion").await;
    mlflow.stop();
    let (m, reason, message) = wait_condition(&models, "champion", "RegistryAvailable", "False").await;
    assert_eq!(reason, "RegistryUnavailable");
    assert!(
        message.contains(&mlflow.url) && message.contains("Connection refused"),
        "the URL and the error: {message}"
    );
    assert!(modelship_tests::is_ready(&m, Some("2")), "still Ready: {:?}", m.status);
    assert!(
        modelship_tests::is_ready(&models.get("pinned").await.unwrap(), Some("1")),
        "a pinned version is not polled"
    );

    // Back again: recovers without a rollout.
    mlflow.restart();
    wait_condition(&models, "champion", "RegistryAvailable", "True").await;
    assert_eq!(deployment_generation(&c, &ns.name, "champion").await, generation, "no rollout");
    assert!(modelship_tests::is_ready(&models.get("champion").await.unwrap(), Some("2")));

    // A canary from another alias gets its own pinned version.
    mlflow.set_alias("iris", "challenger", 1);
    let canary =
        serde_json::json!({"model": {"uri": "models:/iris@challenger", "registry": registry}, "trafficPercent": 50});
    let patch = serde_json::json!({"spec": {"replicas": 2, "canary": canary}});
    modelship_tests::patch_mlmodel(&ns.name, "champion", &patch.to_string());
    wait_condition(&models, "champion", "CanaryReady", "True").await;
    let canary = server_container(&c, &ns.name, "champion-canary").await;
    assert!(canary.args.clone().unwrap().iter().any(|a| a == "models:/iris/1"), "{:?}", canary.args);

    // Moving the canary's alias rolls out the canary alone: the stable Deployment is untouched.
    let stable_generation = deployment_generation(&c, &ns.name, "champion").await;
    let v3 = mlflow.log_model("iris", "skops");
    mlflow.set_alias("iris", "challenger", v3.version);
    wait_for("the canary on version 3", Duration::from_secs(60), || async {
        let canary = server_container(&c, &ns.name, "champion-canary").await;
        canary.args.unwrap_or_default().iter().any(|a| a == "models:/iris/3").then_some(())
    })
    .await;
    wait_condition(&models, "champion", "CanaryReady", "True").await;
    assert_eq!(deployment_generation(&c, &ns.name, "champion").await, stable_generation, "stable untouched");
    let canary = server_container(&c, &ns.name, "champion-canary").await;
    serves_like_sklearn(&canary, &[], &v3).await;
}

/// Records `(Ready status, modelVersion)` of model `name` from the first status that shows
/// `version` resolved until it is Ready on that version.
/// What [`ready_while_resolving`] saw: Ready's status and the served version, in order.
type Seen = tokio::task::JoinHandle<Vec<(String, Option<String>)>>;

fn ready_while_resolving(models: &Api<MLModel>, name: &str, version: &str) -> (modelship_tests::Started, Seen) {
    let stream = watcher::watcher(models.clone(), watcher::Config::default().fields(&format!("metadata.name={name}")))
        .applied_objects();
    let version = version.to_string();
    let (mut listed, watching) = modelship_tests::started();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut stream = std::pin::pin!(stream);
        while let Ok(Some(m)) = stream.try_next().await {
            listed.done();
            let st = m.status.clone().unwrap_or_default();
            if st.model.as_ref().and_then(|r| r.resolved_version.as_deref()) != Some(version.as_str()) {
                continue;
            }
            let ready = st.condition("Ready").map(|c| c.status.clone()).unwrap_or_default();
            let done = ready == "True" && st.model_version.as_deref() == Some(version.as_str());
            seen.push((ready, st.model_version.clone()));
            if done {
                break;
            }
        }
        seen
    });
    (watching, task)
}

#[tokio::test]
async fn basic_auth_credentials_are_used_and_refusals_reported() {
    let c = client().await;
    install_crd().await;
    let mlflow = Mlflow::start(true);
    let v1 = mlflow.log_model("iris", "skops");
    let model = serde_json::json!({"uri": "models:/iris/1", "registry": {"credentialsSecret": "mlflow-creds"}});
    let operator = |ns: &str, password: &str| {
        let mut opts = OperatorOptions::for_namespace(ns);
        opts.extra_args =
            ["--mlflow-tracking-uri", &mlflow.url, "--mlflow-username", ADMIN.0, "--mlflow-password", password]
                .map(String::from)
                .to_vec();
        Operator::start_own(&opts)
    };

    // Right credentials: the operator resolves, the pod downloads with the Secret's.
    let ns = TestNamespace::new(&c, "mlflow-auth").await;
    let _op = operator(&ns.name, ADMIN.1);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: mlflow-creds}}\nstringData: {{username: {}, password: {}}}\n",
        ADMIN.0, ADMIN.1
    );
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&secret)).unwrap();
    apply(&ns.name, "secured", model.clone());
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    wait_ready(&models, "secured", Some("1"), Duration::from_secs(90)).await;
    let container = server_container(&c, &ns.name, "secured").await;
    let refs: Vec<_> =
        container.env.iter().flatten().filter_map(|e| e.value_from.as_ref()?.secret_key_ref.clone()).collect();
    assert!(refs.iter().all(|r| r.name == "mlflow-creds") && refs.len() == 3, "{refs:?}");
    let creds = [("MLFLOW_TRACKING_USERNAME", ADMIN.0), ("MLFLOW_TRACKING_PASSWORD", ADMIN.1)];
    serves_like_sklearn(&container, &creds, &v1).await;
    // Wrong credentials in the pod: one clear line, non-zero exit.
    let (server, _) =
        run_container(&container, &[("MLFLOW_TRACKING_USERNAME", ADMIN.0), ("MLFLOW_TRACKING_PASSWORD", "nope")]);
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the credentials"), "{stderr}");

    // Wrong operator credentials: Degraded, credentials refused, and never logged.
    let ns2 = TestNamespace::new(&c, "mlflow-auth-bad").await;
    let op2 = operator(&ns2.name, "wrong-password-x7");
    apply(&ns2.name, "secured", model);
    let models2: Api<MLModel> = Api::namespaced(c.clone(), &ns2.name);
    let (_, reason, message) = wait_condition(&models2, "secured", "Degraded", "True").await;
    assert_eq!(reason, "RegistryCredentialsRefused");
    assert!(message.contains("refused the credentials"), "{message}");
    assert!(!op2.log_text().contains("wrong-password-x7"), "the operator log shows the password");

    // A user MLflow knows but who is denied the model (MLflow 3's permission grant): 403, also
    // credentials refused.
    let http = reqwest::Client::new();
    let admin = |path: &str, body: serde_json::Value| {
        http.post(format!("{}/api/{path}", mlflow.url)).basic_auth(ADMIN.0, Some(ADMIN.1)).json(&body).send()
    };
    let user = serde_json::json!({"username": "reader", "password": "reader-pass-2c9"});
    assert!(admin("2.0/mlflow/users/create", user).await.unwrap().status().is_success());
    let denied = serde_json::json!({"username": "reader", "resource_type": "registered_model",
        "resource_id": "iris", "permission": "DENY"});
    let r = admin("3.0/mlflow/users/permissions/grant", denied).await.unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let ns3 = TestNamespace::new(&c, "mlflow-auth-denied").await;
    let mut opts = OperatorOptions::for_namespace(&ns3.name);
    opts.extra_args =
        ["--mlflow-tracking-uri", &mlflow.url, "--mlflow-username", "reader", "--mlflow-password", "reader-pass-2c9"]
            .map(String::from)
            .to_vec();
    let _op3 = Operator::start_own(&opts);
    apply(&ns3.name, "secured", serde_json::json!({"uri": "models:/iris/1"}));
    let models3: Api<MLModel> = Api::namespaced(c.clone(), &ns3.name);
    let (_, reason, message) = wait_condition(&models3, "secured", "Degraded", "True").await;
    assert_eq!(reason, "RegistryCredentialsRefused");
    assert!(message.contains("refused the credentials (HTTP 403)"), "{message}");
}

#[tokio::test]
async fn run_uris_onnx_models_and_unserved_flavors() {
    let c = client().await;
    install_crd().await;
    let mlflow = Mlflow::start(false);
    let sklearn = mlflow.log_model("iris", "skops");
    let onnx = mlflow.log_model("iris-onnx", "onnx");
    mlflow.log_model("iris-pyfunc", "pyfunc");
    let ns = TestNamespace::new(&c, "mlflow-flavors").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let registry = serde_json::json!({"trackingURI": mlflow.url});

    // runs:/RUN_ID/model: MLflow 3 keeps a logged model's artifacts outside the run's own
    // (models/m-ID/artifacts); both the operator and the server resolve it as MLflow's client does.
    let uri = format!("runs:/{}/model", sklearn.run_id);
    apply(&ns.name, "by-run", serde_json::json!({"uri": uri, "registry": registry}));
    let m = wait_ready(&models, "by-run", None, Duration::from_secs(90)).await;
    let resolved = m.status.as_ref().unwrap().model.clone().unwrap();
    assert_eq!(resolved.resolved_version, None, "a run is not a registry version: {resolved:?}");
    assert!(resolved.source.as_deref().unwrap().contains("/models/m-"), "the logged model's artifacts: {resolved:?}");
    let container = server_container(&c, &ns.name, "by-run").await;
    assert!(container.args.clone().unwrap().contains(&uri), "{:?}", container.args);
    serves_like_sklearn(&container, &[], &sklearn).await;

    // The onnx flavor (mlflow.onnx.log_model of the skl2onnx export): the same predictions.
    apply(&ns.name, "onnx", serde_json::json!({"uri": "models:/iris-onnx/1", "registry": registry}));
    let m = wait_ready(&models, "onnx", Some("1"), Duration::from_secs(90)).await;
    assert_eq!(m.status.as_ref().unwrap().model.as_ref().unwrap().flavor.as_deref(), Some("onnx"));
    serves_like_sklearn(&server_container(&c, &ns.name, "onnx").await, &[], &onnx).await;

    // A pure python_function model: refused, naming the flavor, before any pod is made.
    apply(&ns.name, "pyfunc", serde_json::json!({"uri": "models:/iris-pyfunc/1", "registry": registry}));
    let (_, reason, message) = wait_condition(&models, "pyfunc", "Degraded", "True").await;
    assert_eq!(reason, "RegistryModelUnsupported");
    assert!(message.contains("flavor python_function is not served") && message.contains("sklearn, onnx"), "{message}");
    assert!(Api::<Deployment>::namespaced(c.clone(), &ns.name).get_opt("pyfunc").await.unwrap().is_none());
}

#[tokio::test]
async fn bad_mlflow_uris_are_refused_by_the_api_server() {
    let c = client().await;
    install_crd().await;
    let ns = TestNamespace::new(&c, "mlflow-uris").await;
    for uri in ["models:/", "models:/x/notanumber", "runs:/", "runs:/abc"] {
        let m = serde_json::json!({
            "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel",
            "metadata": {"name": "bad"}, "spec": {"model": {"uri": uri}},
        });
        let e = kubectl_stdin(&["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(&m.to_string()))
            .expect_err(uri)
            .to_string();
        assert!(e.contains("spec.model.uri") && e.contains("models:/NAME/VERSION"), "{uri}: {e}");
    }
    let ok = serde_json::json!({
        "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel", "metadata": {"name": "good"},
        "spec": {"model": {"uri": "models:/iris@champion", "registry": {"trackingURI": "ftp://x"}}},
    });
    let e = kubectl_stdin(&["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(&ok.to_string()))
        .expect_err("ftp tracking URI")
        .to_string();
    assert!(e.contains("spec.model.registry.trackingURI"), "{e}");
    for uri in ["models:/iris/3", "models:/iris@champion", "runs:/0a1b2c/model"] {
        let m = serde_json::json!({
            "apiVersion": "modelship.dev/v1alpha1", "kind": "MLModel",
            "metadata": {"name": "good"}, "spec": {"model": {"uri": uri}},
        });
        kubectl_stdin(&["apply", "--dry-run=server", "-n", &ns.name, "-f", "-"], Some(&m.to_string())).unwrap();
    }
}

/// MLflow behind an authenticating gateway that takes a bearer token (as a reverse proxy in front
/// of a tracking server does): the operator's and the pod's token are used, a pinned version is
/// never asked again while an alias is polled, an alias move is acted on at the first poll that
/// sees it, unknown names are Degraded naming them, and the gateway's 502 while MLflow is down
/// keeps the model serving with the error shown.
#[tokio::test]
async fn a_token_gateway_pinned_versions_unknown_names_and_a_bad_gateway() {
    let c = client().await;
    install_crd().await;
    let mlflow = Mlflow::start(false);
    let v1 = mlflow.log_model("iris", "skops");
    mlflow.log_model("fixed", "pickle");
    mlflow.set_alias("iris", "champion", 1);
    let token = "tok-modelship-5d1";
    let gateway = TokenGateway::start(mlflow.url.trim_start_matches("http://"), token);
    let ns = TestNamespace::new(&c, "mlflow-token").await;
    let mut opts = OperatorOptions::for_namespace(&ns.name);
    opts.extra_args = ["--mlflow-tracking-uri", &gateway.url, "--mlflow-token", token].map(String::from).to_vec();
    let op = Operator::start_own(&opts);
    let secret =
        format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: mlflow-token}}\nstringData: {{token: {token}}}\n");
    kubectl_stdin(&["apply", "-n", &ns.name, "-f", "-"], Some(&secret)).unwrap();
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let registry = serde_json::json!({"credentialsSecret": "mlflow-token", "pollSeconds": 1});

    // The operator resolves through the gateway with its token; the pod downloads with the Secret's.
    apply(&ns.name, "champion", serde_json::json!({"uri": "models:/iris@champion", "registry": registry}));
    apply(&ns.name, "pinned", serde_json::json!({"uri": "models:/fixed/1", "registry": registry}));
    wait_ready(&models, "champion", Some("1"), Duration::from_secs(90)).await;
    wait_ready(&models, "pinned", Some("1"), Duration::from_secs(90)).await;
    let container = server_container(&c, &ns.name, "champion").await;
    let token_env = container.env.iter().flatten().find(|e| e.name == "MLFLOW_TRACKING_TOKEN").cloned();
    let key = token_env.and_then(|e| e.value_from?.secret_key_ref).map(|r| (r.name, r.key));
    assert_eq!(key, Some(("mlflow-token".to_string(), "token".to_string())), "{:?}", container.env);
    serves_like_sklearn(&container, &[("MLFLOW_TRACKING_TOKEN", token)], &v1).await;
    let (server, _) = run_container(&container, &[("MLFLOW_TRACKING_TOKEN", "not-the-token")]);
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused the credentials") && !stderr.contains("not-the-token"), "{stderr}");

    // Polled every second for the alias; the pinned version is never asked again.
    let (alias_asks, pinned_asks) = (gateway.count("alias=champion"), gateway.count("name=fixed"));
    assert!(pinned_asks > 0, "the pinned version was resolved through the gateway");
    wait_for("three more polls of the alias", Duration::from_secs(60), || async {
        (gateway.count("alias=champion") >= alias_asks + 3).then_some(())
    })
    .await;
    assert_eq!(gateway.count("name=fixed"), pinned_asks, "a pinned version was asked again");

    // An alias move is acted on at the first poll that sees it, counted in polls rather than
    // seconds: once the move is done, at most two more asks (one may be in flight) before the
    // status shows version 2 resolved; then version 2 rolls out to Ready.
    let v2 = mlflow.log_model("iris", "pickle");
    mlflow.set_alias("iris", "champion", v2.version);
    let moved = gateway.count("alias=champion");
    let acted = wait_for("version 2 resolved", Duration::from_secs(60), || async {
        let m = models.get("champion").await.ok()?;
        let resolved = m.status?.model?.resolved_version;
        (resolved.as_deref() == Some("2")).then(|| gateway.count("alias=champion"))
    })
    .await;
    eprintln!("alias asks after the move until it was acted on: {}", acted - moved);
    assert!(acted <= moved + 2, "{} asks of the moved alias before the operator acted on it", acted - moved);
    wait_ready(&models, "champion", Some("2"), Duration::from_secs(90)).await;

    // Unknown names: Degraded, naming what is missing, and no Deployment.
    apply(&ns.name, "no-alias", serde_json::json!({"uri": "models:/iris@nosuch", "registry": registry}));
    apply(&ns.name, "no-model", serde_json::json!({"uri": "models:/ghost/1", "registry": registry}));
    for (name, what) in [("no-alias", "alias nosuch of registered model iris"), ("no-model", "registered model ghost")]
    {
        let (_, reason, message) = wait_condition(&models, name, "Degraded", "True").await;
        assert_eq!(reason, "RegistryModelNotFound", "{name}: {message}");
        assert!(message.contains(what), "{name}: {message}");
        assert!(Api::<Deployment>::namespaced(c.clone(), &ns.name).get_opt(name).await.unwrap().is_none());
    }

    // MLflow down behind the gateway: 502, the model keeps serving and the condition says why.
    let generation = deployment_generation(&c, &ns.name, "champion").await;
    mlflow.stop();
    let (m, reason, message) = wait_condition(&models, "champion", "RegistryAvailable", "False").await;
    assert_eq!(reason, "RegistryUnavailable");
    assert!(message.contains(&gateway.url) && message.contains("HTTP 502"), "{message}");
    assert!(modelship_tests::is_ready(&m, Some("2")), "still Ready: {:?}", m.status);
    mlflow.restart();
    wait_condition(&models, "champion", "RegistryAvailable", "True").await;
    assert_eq!(deployment_generation(&c, &ns.name, "champion").await, generation, "no rollout");
    assert!(!op.log_text().contains(token), "the operator log shows the token");
}

/// A version registered with a plain HTTP artifact location (a file server, not MLflow's artifact
/// proxy) is resolved and served; a version whose recorded signature does not fit the model's
/// features is refused by the server with both counts.
#[tokio::test]
async fn an_http_artifact_location_and_a_signature_that_does_not_fit() {
    let c = client().await;
    install_crd().await;
    let mlflow = Mlflow::start(false);
    let host = ArtifactHost::start();
    let v1 = mlflow.save_http("web", &host, None);
    mlflow.save_http("web", &host, Some(3));
    let ns = TestNamespace::new(&c, "mlflow-http").await;
    let _op = Operator::start(&OperatorOptions::for_namespace(&ns.name));
    let models: Api<MLModel> = Api::namespaced(c.clone(), &ns.name);
    let registry = serde_json::json!({"trackingURI": mlflow.url});

    apply(&ns.name, "web", serde_json::json!({"uri": "models:/web/1", "registry": registry}));
    let m = wait_ready(&models, "web", Some("1"), Duration::from_secs(90)).await;
    let resolved = m.status.as_ref().unwrap().model.clone().unwrap();
    assert_eq!(resolved.source.as_deref(), Some(format!("{}/web-v1", host.url).as_str()), "{resolved:?}");
    serves_like_sklearn(&server_container(&c, &ns.name, "web").await, &[], &v1).await;

    apply(&ns.name, "web-3", serde_json::json!({"uri": "models:/web/2", "registry": registry}));
    wait_for("the Deployment of version 2", Duration::from_secs(60), || async {
        Api::<Deployment>::namespaced(c.clone(), &ns.name).get_opt("web-3").await.ok().flatten()
    })
    .await;
    let (server, _) = run_container(&server_container(&c, &ns.name, "web-3").await, &[]);
    let out = server.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the MLmodel signature has 3 inputs but the model expects 4 features"), "{stderr}");
}
