//! Reconcile safety nets without a cluster: ownership checks, refused applies, the blocked
//! status, failure bookkeeping, and the exact status-write request (against a mock API server).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{as_live, model, settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use modelship_crds::MLModelStatus;
use modelship_crds::condition::{DEGRADED, PROGRESSING, READY};
use modelship_operator::caches::Caches;
use modelship_operator::error::is_refusal;
use modelship_operator::failures::{FORGET_AFTER, Failures};
use modelship_operator::metrics::Metrics;
use modelship_operator::reconcile::{Context, StatusWrite, reconcile, write_status};
use modelship_operator::{ownership, status, validate};

fn owned_by(m: &modelship_crds::MLModel) -> ObjectMeta {
    ObjectMeta { owner_references: m.controller_owner_ref(&()).map(|r| vec![r]), ..Default::default() }
}

#[test]
fn only_an_object_with_our_controller_reference_is_ours() {
    let m = model("configmap://iris-model/model.json");
    assert!(ownership::check(None, &m, "Service", "iris").is_ok(), "nothing there yet");
    assert!(ownership::check(Some(&owned_by(&m)), &m, "Service", "iris").is_ok());

    let err = ownership::check(Some(&ObjectMeta::default()), &m, "Service", "iris").unwrap_err();
    assert_eq!(err.blocking_reason(), Some("NameConflict"));
    let msg = err.to_string();
    assert!(msg.contains(r#"Service "iris""#) && msg.contains("no owner"), "{msg}");

    let mut other = m.clone();
    other.metadata.name = Some("iris-v2".into());
    other.metadata.uid = Some("other-uid".into());
    let msg = ownership::check(Some(&owned_by(&other)), &m, "Deployment", "iris").unwrap_err().to_string();
    assert!(msg.contains(r#"MLModel "iris-v2" (uid other-uid)"#), "names who controls it: {msg}");

    let mut not_controller = owned_by(&m);
    for r in not_controller.owner_references.iter_mut().flatten() {
        r.controller = Some(false);
    }
    assert!(!ownership::is_controlled_by(&not_controller, &m), "an ownerReference that is not the controller");
}

#[test]
fn refusals_are_the_4xx_that_a_retry_cannot_fix() {
    for (code, refused) in [(400, true), (422, true), (409, false), (429, false), (404, false), (403, false)] {
        let s = kube::core::Status::failure("x", "y").with_code(code);
        assert_eq!(is_refusal(&s), refused, "{code}");
    }
    assert!(!is_refusal(&kube::core::Status::failure("x", "y").with_code(500)));
}

#[test]
fn a_blocked_model_reports_degraded_with_the_cause_and_keeps_its_state() {
    let mut m = model("configmap://iris-model/model.json");
    let now = Time("2026-12-01T10:00:00Z".parse().unwrap());
    let fresh = status::blocked(&m, "InvalidChild", "the API server refused the Deployment \"iris\": no", &now);
    assert_eq!(fresh.observed_generation, Some(3), "a new model gets a status");
    let cond = |st: &MLModelStatus, t: &str| {
        let c = st.condition(t).unwrap();
        (c.status.clone(), c.reason.clone())
    };
    assert_eq!(cond(&fresh, DEGRADED), ("True".into(), "InvalidChild".into()));
    assert_eq!(cond(&fresh, READY), ("False".into(), "InvalidChild".into()));
    assert_eq!(cond(&fresh, PROGRESSING), ("False".into(), "Blocked".into()));
    assert!(fresh.condition(DEGRADED).unwrap().message.contains("refused the Deployment"));

    let mut stored = fresh.clone();
    stored.last_good_model = Some(m.spec.model.clone());
    stored.ready_replicas = 2;
    m.status = Some(stored);
    let again = status::blocked(&m, "NameConflict", "taken", &now);
    assert_eq!(again.last_good_model, Some(m.spec.model.clone()), "rollback state is kept");
    assert_eq!(again.ready_replicas, 2);
    assert_eq!(again.conditions.len(), 3);
}

#[test]
fn failures_of_deleted_models_are_pruned() {
    let mut failures = Failures::default();
    let t0 = Instant::now();
    let gone = model("configmap://iris-model/model.json");
    let mut failing = gone.clone();
    failing.metadata.name = Some("other".into());
    failing.metadata.uid = Some("other-uid".into());

    assert_eq!(failures.record(&gone, t0), 1);
    assert_eq!(failures.record(&gone, t0 + Duration::from_secs(5)), 2);
    assert_eq!(failures.record(&failing, t0 + Duration::from_secs(10)), 1);
    // `gone` was deleted and is never reconciled again; `failing` is retried at the longest backoff.
    assert_eq!(failures.record(&failing, t0 + Duration::from_secs(310)), 2);
    let later = t0 + FORGET_AFTER + Duration::from_secs(60);
    assert_eq!(failures.record(&failing, later), 3);
    assert_eq!(failures.len(), 1, "the deleted model's entry is pruned, the failing one's kept");

    let mut recreated = failing.clone();
    recreated.metadata.uid = Some("new-uid".into());
    assert_eq!(failures.record(&recreated, later), 1, "a model re-created under the same name starts over");
    failures.clear(&recreated);
    assert!(failures.is_empty());
    failures.record(&gone, later);
    failures.prune(later + FORGET_AFTER + Duration::from_secs(1));
    assert!(failures.is_empty());
}

type Handle = tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>;

fn mock_context() -> (Context, Handle) {
    let (svc, handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let client = kube::Client::new(svc, "default");
    let recorder = Recorder::new(client.clone(), Reporter { controller: "test".into(), instance: None });
    (Context::new(client, settings(), Arc::new(Metrics::new()), recorder), handle)
}

/// Answers the one status write: checks the request and replies `code` with `body`.
async fn expect_status_apply(mut handle: Handle, code: u16, body: serde_json::Value) -> serde_json::Value {
    let (req, send) = handle.next_request().await.expect("a status write");
    assert_eq!(req.method(), http::Method::PATCH);
    assert_eq!(req.uri().path(), "/apis/modelship.dev/v1alpha1/namespaces/ml/mlmodels/iris/status");
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    assert!(query.contains(&("fieldManager".into(), "modelship-operator".into())), "{query:?}");
    assert!(query.contains(&("force".into(), "true".into())), "{query:?}");
    assert_eq!(req.headers()["content-type"], "application/apply-patch+yaml");
    let patch: serde_json::Value = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
    let reply = http::Response::builder().status(code).body(kube::client::Body::from(body.to_string().into_bytes()));
    send.send_response(reply.unwrap());
    patch
}

#[tokio::test]
async fn a_status_write_is_conditional_on_the_observed_resource_version() {
    let (ctx, handle) = mock_context();
    let mut m = model("configmap://iris-model/model.json");
    m.metadata.resource_version = Some("4711".into());
    let st = MLModelStatus {
        observed_generation: Some(3),
        last_good_model: Some(m.spec.model.clone()),
        ..Default::default()
    };

    let conflict = serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409,
        "message": "Operation cannot be fulfilled on mlmodels.modelship.dev \"iris\": the object has been modified; \
                    please apply your changes to the latest version and try again",
    });
    let server = tokio::spawn(expect_status_apply(handle, 409, conflict));
    let written = tokio::time::timeout(Duration::from_secs(10), write_status(&ctx, &m, "ml", &st)).await.unwrap();
    let patch = server.await.unwrap();
    assert_eq!(patch["metadata"]["resourceVersion"], "4711", "the precondition: {patch}");
    assert_eq!(patch["status"]["lastGoodModel"]["version"], "v1");
    assert_eq!(written.unwrap(), StatusWrite::Stale, "a 409 means: reconcile again from the newer copy");
}

#[tokio::test]
async fn a_status_write_on_the_current_version_is_done() {
    let (ctx, handle) = mock_context();
    let mut m = model("configmap://iris-model/model.json");
    m.metadata.resource_version = Some("12".into());
    let st = MLModelStatus { observed_generation: Some(3), ..Default::default() };
    let mut stored = serde_json::to_value(&m).unwrap();
    stored["status"] = serde_json::to_value(&st).unwrap();
    let server = tokio::spawn(expect_status_apply(handle, 200, stored));
    let written = tokio::time::timeout(Duration::from_secs(10), write_status(&ctx, &m, "ml", &st)).await.unwrap();
    assert_eq!(server.await.unwrap()["metadata"]["resourceVersion"], "12");
    assert!(matches!(written, Ok(StatusWrite::Done)), "{written:?}");
}

/// What the stand-in API server saw: method, path (no query) and JSON body of each request.
type Seen = Vec<(String, String, serde_json::Value)>;

/// A stand-in API server for whole reconciles: answers every request with `answer` until the
/// client is dropped, and returns what it saw.
async fn serve<F>(mut handle: Handle, answer: F) -> Seen
where
    F: Fn(&str, &str, &serde_json::Value) -> (u16, serde_json::Value),
{
    let mut seen = vec![];
    while let Some((req, send)) = handle.next_request().await {
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        let body = serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap_or_default();
        let (code, reply) = answer(&method, &path, &body);
        let response =
            http::Response::builder().status(code).body(kube::client::Body::from(reply.to_string().into_bytes()));
        send.send_response(response.unwrap());
        seen.push((method, path, body));
    }
    seen
}

fn api_status(code: u16, reason: &str) -> serde_json::Value {
    serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": reason,
                       "code": code, "message": reason})
}

/// The cluster of `model` (the iris fixture): its ConfigMap, no children yet except, if given, a
/// Service named like the model that someone else made; status writes answered with `status_code`.
fn cluster(
    model: &modelship_crds::MLModel,
    foreign_service: Option<serde_json::Value>,
    status_code: u16,
) -> impl Fn(&str, &str, &serde_json::Value) -> (u16, serde_json::Value) + Send + 'static {
    let stored = serde_json::to_value(model).unwrap();
    move |method, path, body| match (method, path) {
        ("GET", "/api/v1/namespaces/ml/configmaps/iris-model") => (
            200,
            serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "iris-model"},
                               "data": {"model.json": "{}"}}),
        ),
        ("GET", "/api/v1/namespaces/ml/pods") => {
            (200, serde_json::json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": []}))
        }
        ("GET", "/api/v1/namespaces/ml/services") => (
            200,
            serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList", "metadata": {},
                               "items": []}),
        ),
        ("GET", "/api/v1/namespaces/ml/services/iris") if foreign_service.is_some() => {
            (200, foreign_service.clone().unwrap_or_default())
        }
        ("GET", _) => (404, api_status(404, "NotFound")),
        ("PATCH", p) if p.ends_with("/status") && status_code == 200 => (200, stored.clone()),
        ("PATCH", p) if p.ends_with("/status") => (status_code, api_status(status_code, "Conflict")),
        ("PATCH", _) | ("POST", _) => (200, body.clone()),
        _ => (405, api_status(405, "MethodNotAllowed")),
    }
}

fn patched(seen: &Seen) -> Vec<&str> {
    seen.iter().filter(|(m, _, _)| m == "PATCH").map(|(_, p, _)| p.as_str()).collect()
}

#[tokio::test]
async fn a_reconcile_whose_status_write_is_stale_requeues_at_once() {
    let (ctx, handle) = mock_context();
    let mut m = model("configmap://iris-model/model.json");
    m.metadata.resource_version = Some("7".into());
    let server = tokio::spawn(serve(handle, cluster(&m, None, 409)));
    let reconciled = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(m), Arc::new(ctx))).await;
    let seen = server.await.unwrap();
    assert_eq!(reconciled.unwrap().unwrap(), Action::requeue(Duration::from_secs(1)), "{seen:?}");
    let status = seen.iter().find(|(m, p, _)| m == "PATCH" && p.ends_with("/status")).unwrap();
    assert_eq!(status.2["metadata"]["resourceVersion"], "7");
}

#[tokio::test]
async fn a_service_someone_else_owns_is_never_patched_and_the_model_says_name_conflict() {
    let (ctx, handle) = mock_context();
    let mut m = model("configmap://iris-model/model.json");
    m.metadata.resource_version = Some("7".into());
    let theirs = serde_json::json!({"apiVersion": "v1", "kind": "Service",
                                    "metadata": {"name": "iris", "namespace": "ml", "uid": "not-ours"}});
    let server = tokio::spawn(serve(handle, cluster(&m, Some(theirs), 200)));
    let reconciled = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(m), Arc::new(ctx))).await;
    let seen = server.await.unwrap();
    assert_eq!(reconciled.unwrap().unwrap(), Action::requeue(Duration::from_secs(5)), "backoff: {seen:?}");
    assert_eq!(patched(&seen), ["/apis/modelship.dev/v1alpha1/namespaces/ml/mlmodels/iris/status"], "{seen:?}");
    let status = &seen.iter().find(|(m, _, _)| m == "PATCH").unwrap().2["status"];
    let degraded = status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Degraded").unwrap();
    assert_eq!(degraded["reason"], "NameConflict");
    let msg = degraded["message"].as_str().unwrap();
    assert!(msg.contains(r#"Service "iris""#) && msg.contains("no owner"), "{msg}");
    let event = seen.iter().find(|(m, p, _)| m == "POST" && p.contains("/events")).expect("an Event");
    assert_eq!(event.2["reason"], "NameConflict");
}

#[test]
fn malformed_quantities_are_caught_before_the_api_server_fails_with_a_500() {
    for ok in ["100m", "64Mi", "1", "1.5", ".5", "5.", "2e3", "1E-2", "+1Gi", "3E", "250k"] {
        assert!(validate::is_quantity(ok), "{ok}");
    }
    for bad in ["lots", "", "Mi", "1.2.3", "1e", "1 Gi", "1GiB", "1mi", "--1"] {
        assert!(!validate::is_quantity(bad), "{bad}");
    }
    let mut m = model("configmap://iris-model/model.json");
    assert!(validate::spec(&m).is_ok());
    m.spec.server = serde_json::from_value(serde_json::json!({"resources": {
        "requests": {"cpu": "100m"}, "limits": {"memory": "lots"},
    }}))
    .unwrap();
    let err = validate::spec(&m).unwrap_err();
    assert_eq!(err.blocking_reason(), Some("InvalidSpec"));
    assert!(err.to_string().starts_with(r#"spec.server.resources.limits.memory: "lots" is not a quantity"#), "{err}");
}

/// An alias is asked again every `pollSeconds` (60 by default); an unanswered poll backs off
/// (5 s, 10 s, ...) but never waits longer than `pollSeconds`, and an answer resets the backoff;
/// a pinned version or run is never asked again.
#[test]
fn registry_polls_follow_poll_seconds_back_off_while_unanswered_and_never_for_pinned() {
    use modelship_operator::reconcile::next_registry_poll;
    let (mut failures, now) = (Failures::default(), Instant::now());
    let secs = Duration::from_secs;
    let alias = model("models:/iris@champion");
    assert_eq!(next_registry_poll(&alias, false, &mut failures, now), secs(60), "the default pollSeconds");
    let mut every_30s = alias.clone();
    every_30s.spec.model.registry = serde_json::from_value(serde_json::json!({"pollSeconds": 30})).unwrap();
    let unanswered: Vec<Duration> = (0..6).map(|_| next_registry_poll(&every_30s, true, &mut failures, now)).collect();
    assert_eq!(unanswered, [secs(5), secs(10), secs(20), secs(30), secs(30), secs(30)]);
    assert_eq!(next_registry_poll(&every_30s, false, &mut failures, now), secs(30));
    assert!(failures.is_empty(), "an answer resets the backoff");
    assert_eq!(next_registry_poll(&every_30s, true, &mut failures, now), secs(5));
    for pinned in ["models:/iris/3", "runs:/0a1b2c/model"] {
        assert_eq!(next_registry_poll(&model(pinned), false, &mut failures, now), Duration::MAX, "{pinned}");
    }
}

/// One reconcile of `m` reading children from `caches`, against a stand-in API server that
/// accepts every write (an applied child comes back live and rolled out); returns the requests
/// it saw.
async fn pass(m: &modelship_crds::MLModel, caches: Caches) -> Seen {
    let (ctx, handle) = mock_context();
    let ctx = Arc::new(ctx.with_caches(caches));
    let stored = serde_json::to_value(m).unwrap();
    let server = tokio::spawn(serve(handle, move |method, path, body| match method {
        "GET" => (404, api_status(404, "NotFound")),
        "PATCH" if path.ends_with("/status") => (200, stored.clone()),
        "PATCH" => (200, as_live::<serde_json::Value>(body)),
        _ => (200, body.clone()),
    }));
    tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(m.clone()), ctx)).await.unwrap().unwrap();
    server.await.unwrap()
}

/// The body of the one PATCH to `path` in `seen`.
fn body_of<'a>(seen: &'a Seen, path: &str) -> &'a serde_json::Value {
    let mut bodies = seen.iter().filter(|(m, p, _)| m == "PATCH" && p == path);
    let body = &bodies.next().unwrap_or_else(|| panic!("no PATCH of {path}: {seen:?}")).2;
    assert!(bodies.next().is_none(), "two PATCHes of {path}");
    body
}

#[tokio::test]
async fn a_reconcile_with_nothing_to_do_sends_no_request_and_a_hand_edit_is_reverted_by_one_apply() {
    const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/ml/deployments/iris";
    const SERVICE: &str = "/api/v1/namespaces/ml/services/iris";
    const STATUS: &str = "/apis/modelship.dev/v1alpha1/namespaces/ml/mlmodels/iris/status";
    let mut m = model("https://models.example.com/iris.json");
    m.metadata.resource_version = Some("7".into());

    // Nothing exists yet: the children are applied (each checked by a GET first: no cache has them).
    let first = pass(&m, Caches::holding(vec![], vec![], vec![])).await;
    let gets: Vec<&str> = first.iter().filter(|(m, _, _)| m == "GET").map(|(_, p, _)| p.as_str()).collect();
    assert_eq!(gets, [DEPLOYMENT, SERVICE], "{first:?}");
    let deployment: Deployment = as_live(body_of(&first, DEPLOYMENT));
    let service: Service = as_live(body_of(&first, SERVICE));
    assert!(
        deployment.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(modelship_crds::labels::APPLIED)),
        "the applied object carries the digest of our intent"
    );
    m.status = serde_json::from_value(body_of(&first, STATUS)["status"].clone()).unwrap();
    assert!(status::is_ready(&m, m.status.as_ref().unwrap()), "{:?}", m.status);

    // The children are live and cached, the status is written: not a single request.
    let caches = || Caches::holding(vec![deployment.clone()], vec![service.clone()], vec![]);
    let idle = pass(&m, caches()).await;
    assert!(idle.is_empty(), "a reconcile with nothing to do sent {idle:?}");

    // A hand edit of a field we set is reverted at once, by one apply of that object only.
    let mut edited = deployment.clone();
    edited.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("someone/else:1".into());
    let reverted = pass(&m, Caches::holding(vec![edited], vec![service.clone()], vec![])).await;
    assert_eq!(patched(&reverted), [DEPLOYMENT], "{reverted:?}");
    assert_eq!(reverted.len(), 1, "{reverted:?}");
    assert_eq!(body_of(&reverted, DEPLOYMENT), body_of(&first, DEPLOYMENT), "the same intent is applied again");
}
