//! The plan, without a cluster: what one reconcile writes for a given observation (the canary,
//! the stable choice, the replica split, applies only of what differs, cleanup by inventory), and
//! the exact requests the apply phase sends for a plan (against a stand-in API server).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{as_live, model, settings};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};
use kube::Resource;
use kube::api::DynamicObject;
use modelship_crds::{MLModel, ModelSpec, ModelUri, RollbackStatus};
use modelship_operator::apply::{self, HANDOVER_MANAGER};
use modelship_operator::desired::{self, ServerPods, SourceVersion, Track};
use modelship_operator::error::Error;
use modelship_operator::health::Health;
use modelship_operator::metrics::Metrics;
use modelship_operator::plan::{Announcement, Kind, Observation, Plan, Write, plan};
use modelship_operator::status::SourceProblem;
use serde_json::{Value, json};

const CM: &str = "configmap://iris-model/model.json";

fn resolved(uri: &str) -> modelship_operator::source::Resolved {
    Ok((ModelUri::parse(uri).unwrap(), SourceVersion { content_hash: Some(format!("{uri}-hash")), registry: None }))
}

fn nothing_yet() -> Observation {
    Observation::empty(resolved(CM))
}

fn writes(p: &Plan) -> Vec<(&'static str, Kind, &str)> {
    p.writes.iter().map(Write::summary).collect()
}

fn body<'a>(p: &'a Plan, kind: Kind, name: &str) -> &'a Value {
    p.writes
        .iter()
        .find_map(|w| match w {
            Write::Apply { kind: k, name: n, body, .. } if *k == kind && n == name => Some(body),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no apply of {kind:?} {name}: {:?}", writes(p)))
}

/// The cluster after `p` went out: every applied child live (a Deployment rolled out).
fn after(p: &Plan, mut seen: Observation) -> Observation {
    for w in &p.writes {
        let Write::Apply { kind, name, body, .. } = w else { continue };
        match kind {
            Kind::Service => {
                seen.services.retain(|s| s.metadata.name.as_deref() != Some(name.as_str()));
                seen.services.push(as_live(body));
            }
            Kind::Deployment if name.ends_with("-canary") => seen.canary_deployment = Some(as_live(body)),
            Kind::Deployment => seen.stable_deployment = Some(as_live(body)),
            Kind::HorizontalPodAutoscaler => seen.hpa = Some(as_live(body)),
            Kind::HttpRoute => seen.route = Some(as_live(body)),
        }
    }
    seen
}

fn replicas(body: &Value) -> Option<i64> {
    body["spec"]["replicas"].as_i64()
}

fn owned_by_someone_else<K: Resource>(mut obj: K) -> K {
    obj.meta_mut().owner_references = Some(vec![OwnerReference {
        api_version: "modelship.dev/v1alpha1".into(),
        kind: "MLModel".into(),
        name: "other".into(),
        uid: "other-uid".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    obj
}

fn with_canary(mut m: MLModel, percent: i32) -> MLModel {
    m.spec.replicas = 4;
    m.spec.canary = Some(
        serde_json::from_value(json!({"model": {"uri": "configmap://iris-v2/model.json", "version": "v2"},
                                      "trafficPercent": percent}))
        .unwrap(),
    );
    m
}

#[test]
fn a_new_model_gets_its_service_and_deployment_and_an_event_says_so() {
    let m = model(CM);
    let p = plan(&m, &nothing_yet(), &settings()).unwrap();
    assert_eq!(
        writes(&p),
        [("apply", Kind::Service, "iris"), ("apply", Kind::Deployment, "iris")],
        "nothing else exists, nothing else is written"
    );
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris")), Some(1));
    assert_eq!(p.announce, Some(Announcement::Created));
    assert!(p.unchanged.is_empty() && p.served.is_none() && p.canary.is_none());
    assert_eq!(p.rollback, RollbackStatus::default());
}

#[test]
fn children_that_hold_the_intent_are_not_written_and_a_hand_edit_is_written_back_alone() {
    let m = model(CM);
    let first = plan(&m, &nothing_yet(), &settings()).unwrap();
    let live = after(&first, nothing_yet());
    let idle = plan(&m, &live, &settings()).unwrap();
    assert!(idle.writes.is_empty(), "{:?}", writes(&idle));
    assert_eq!(idle.unchanged, ["apply Service", "apply Deployment"]);
    assert_eq!(idle.announce, None, "no rollout, no event");

    let mut edited = live.clone();
    let d = edited.stable_deployment.as_mut().unwrap();
    d.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("someone/else:1".into());
    let reverted = plan(&m, &edited, &settings()).unwrap();
    assert_eq!(writes(&reverted), [("apply", Kind::Deployment, "iris")]);
    assert_eq!(body(&reverted, Kind::Deployment, "iris"), body(&first, Kind::Deployment, "iris"));
    assert_eq!(reverted.announce, None, "writing a hand edit back is not a rollout of the model");

    let mut v2 = m.clone();
    v2.spec.model.version = Some("v2".into());
    let rollout = plan(&v2, &live, &settings()).unwrap();
    assert!(rollout.applies(Kind::Deployment, "iris"));
    assert_eq!(rollout.announce, Some(Announcement::RolloutStarted));
}

#[test]
fn a_name_taken_by_an_object_the_model_does_not_control_is_a_conflict_before_any_write() {
    let m = model(CM);
    let mut theirs = nothing_yet();
    theirs.services = vec![as_live(&json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "iris"},
                                            "spec": {"ports": [{"port": 80}]}}))];
    let err = plan(&m, &theirs, &settings()).unwrap_err();
    assert!(matches!(&err, Error::NameConflict { kind, name, .. } if kind == "Service" && name == "iris"), "{err}");

    let first = plan(&m, &nothing_yet(), &settings()).unwrap();
    let mut other_model = nothing_yet();
    other_model.stable_deployment =
        Some(owned_by_someone_else(as_live::<Deployment>(body(&first, Kind::Deployment, "iris"))));
    let err = plan(&m, &other_model, &settings()).unwrap_err();
    assert!(err.to_string().contains(r#"MLModel "other""#), "{err}");
}

#[test]
fn a_broken_source_writes_nothing_to_the_version_that_serves() {
    let m = model(CM);
    let live = after(&plan(&m, &nothing_yet(), &settings()).unwrap(), nothing_yet());
    let mut broken = live.clone();
    broken.resolved = Err(SourceProblem::ConfigMapNotFound { name: "iris-model".into() });
    let p = plan(&m, &broken, &settings()).unwrap();
    assert!(p.writes.is_empty(), "{:?}", writes(&p));
    assert_eq!(p.announce, None);
}

#[test]
fn the_canary_takes_its_share_from_the_stable_pods_only_once_it_is_ready() {
    let m = with_canary(model(CM), 25);
    let mut seen = nothing_yet();
    seen.canary = Some(resolved("configmap://iris-v2/model.json"));
    let p = plan(&m, &seen, &settings()).unwrap();
    assert_eq!(
        writes(&p),
        [
            ("apply", Kind::Service, "iris"),
            ("apply", Kind::Deployment, "iris"),
            ("apply", Kind::Deployment, "iris-canary"),
        ]
    );
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris")), Some(4), "all 4 stable pods stay until the canary is up");
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris-canary")), Some(1), "25% of 4");
    assert_eq!(p.canary.as_ref().unwrap().health, Health::Progressing);

    // The canary is up (its one pod available): the stable track gives up its share.
    let up = after(&p, seen);
    let p = plan(&m, &up, &settings()).unwrap();
    assert_eq!(writes(&p), [("apply", Kind::Deployment, "iris")]);
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris")), Some(3));
    assert_eq!(p.canary.as_ref().unwrap().health, Health::Available);
    assert!(!p.canary.as_ref().unwrap().failed);
}

#[test]
fn an_ended_canary_is_deleted_once_the_stable_pods_carry_the_whole_load() {
    let canary = with_canary(model(CM), 25);
    let mut seen = nothing_yet();
    seen.canary = Some(resolved("configmap://iris-v2/model.json"));
    let running = after(&plan(&canary, &seen, &settings()).unwrap(), seen);
    let running = after(&plan(&canary, &running, &settings()).unwrap(), running);

    let mut ended = canary.clone();
    ended.spec.canary = None;
    ended.status = Some(modelship_crds::MLModelStatus {
        rollback: Some(RollbackStatus { failed_canary: Some("old".into()), ..Default::default() }),
        ..Default::default()
    });
    let mut seen = running.clone();
    seen.canary = None;
    // First the stable track goes back to all 4 pods: the canary stays until that is rolled out.
    let p = plan(&ended, &seen, &settings()).unwrap();
    assert_eq!(writes(&p), [("apply", Kind::Deployment, "iris")]);
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris")), Some(4));
    assert!(!p.canary_removed);

    let p = plan(&ended, &after(&p, seen), &settings()).unwrap();
    assert_eq!(writes(&p), [("delete", Kind::Deployment, "iris-canary")]);
    assert!(matches!(&p.writes[0], Write::Delete { uid: Some(uid), .. } if uid == "iris-canary-uid"));
    assert!(p.canary_removed);
    assert_eq!(p.rollback, RollbackStatus::default(), "the canary's failure record goes with it");
}

fn failed_rollout(d: &mut Deployment) {
    let st = d.status.as_mut().unwrap();
    st.available_replicas = Some(0);
    st.conditions = Some(vec![k8s_openapi::api::apps::v1::DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some("ProgressDeadlineExceeded".into()),
        message: Some("ReplicaSet \"iris-7f\" has timed out progressing.".into()),
        ..Default::default()
    }]);
}

#[test]
fn a_failed_new_version_rolls_back_to_the_last_good_model_when_its_source_is_there() {
    let good: ModelSpec = serde_json::from_value(json!({"uri": CM, "version": "v1"})).unwrap();
    let mut m = model("configmap://iris-v2/model.json");
    m.spec.model.version = Some("v2".into());
    m.status = Some(modelship_crds::MLModelStatus { last_good_model: Some(good.clone()), ..Default::default() });
    let mut seen = Observation::empty(resolved("configmap://iris-v2/model.json"));
    let rolled = after(&plan(&m, &seen, &settings()).unwrap(), seen.clone());
    seen.stable_deployment = rolled.stable_deployment;
    failed_rollout(seen.stable_deployment.as_mut().unwrap());
    seen.services = rolled.services;
    seen.last_good = Some(resolved(CM));

    let p = plan(&m, &seen, &settings()).unwrap();
    assert_eq!(p.served.as_ref(), Some(&good));
    let (uri, version) = resolved(CM).unwrap();
    let pods = ServerPods { track: Track::Stable, model: &good, uri: &uri, source: &version, replicas: Some(1) };
    let back = desired::deployment(&m, &pods, &settings());
    assert_eq!(
        body(&p, Kind::Deployment, "iris")["spec"]["template"],
        serde_json::to_value(&back).unwrap()["spec"]["template"],
        "the stable Deployment runs v1 again"
    );
    let v2 = resolved("configmap://iris-v2/model.json").unwrap().1;
    assert_eq!(p.rollback.failed_stable, Some(desired::rollout_hash(&m, &m.spec.model, &settings(), &v2)));
    assert!(p.rollback.stable_message.as_deref().unwrap().contains("v2 failed (ProgressDeadlineExceeded"));

    // The last good model's ConfigMap is gone: nothing to go back to, v2 stays.
    seen.last_good = Some(Err(SourceProblem::ConfigMapNotFound { name: "iris-model".into() }));
    let p = plan(&m, &seen, &settings()).unwrap();
    assert_eq!(p.served, None);
    assert_eq!(p.rollback, RollbackStatus::default());
}

#[test]
fn cleanup_is_by_inventory_of_what_the_model_controls() {
    let m = model(CM);
    let first = plan(&m, &nothing_yet(), &settings()).unwrap();
    let mut seen = after(&first, nothing_yet());
    // Left over from Gateway mode and from autoscaling (status never recorded them), and a
    // Service with our label that another model controls.
    for track in [Track::Stable, Track::Canary] {
        seen.services
            .push(as_live(&serde_json::to_value(modelship_operator::traffic::track_service(&m, track)).unwrap()));
    }
    let mut theirs: Service = as_live(&serde_json::to_value(desired::service(&m)).unwrap());
    theirs.metadata.name = Some("iris-theirs".into());
    seen.services.push(owned_by_someone_else(theirs));
    let mut autoscaled = m.clone();
    autoscaled.spec.autoscaling = Some(serde_json::from_value(json!({"minReplicas": 1, "maxReplicas": 3})).unwrap());
    seen.hpa = Some(as_live::<HorizontalPodAutoscaler>(&serde_json::to_value(desired::hpa(&autoscaled)).unwrap()));
    let route = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                       "metadata": {"name": "iris", "ownerReferences": [m.controller_owner_ref(&()).unwrap()]}});
    seen.route = Some(as_live::<DynamicObject>(&route));

    let p = plan(&m, &seen, &settings()).unwrap();
    assert_eq!(
        writes(&p),
        [
            ("delete", Kind::HorizontalPodAutoscaler, "iris"),
            ("delete", Kind::Service, "iris-stable"),
            ("delete", Kind::Service, "iris-canary"),
            ("delete", Kind::HttpRoute, "iris"),
        ],
        "every leftover the model controls, and nothing else"
    );
}

#[test]
fn switching_to_autoscaling_hands_the_replicas_over_before_they_are_dropped() {
    let m = model(CM);
    let mut seen = after(&plan(&m, &nothing_yet(), &settings()).unwrap(), nothing_yet());
    let d = seen.stable_deployment.as_mut().unwrap();
    d.spec.as_mut().unwrap().replicas = Some(2);
    d.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
        manager: Some(modelship_crds::FIELD_MANAGER.into()),
        operation: Some("Apply".into()),
        fields_v1: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::FieldsV1(
            json!({"f:spec": {"f:replicas": {}}}),
        )),
        ..Default::default()
    }]);
    let mut autoscaled = m.clone();
    autoscaled.spec.autoscaling = Some(serde_json::from_value(json!({"minReplicas": 1, "maxReplicas": 3})).unwrap());
    let p = plan(&autoscaled, &seen, &settings()).unwrap();
    assert_eq!(
        writes(&p),
        [
            ("hand over replicas", Kind::Deployment, "iris"),
            ("apply", Kind::Deployment, "iris"),
            ("apply", Kind::HorizontalPodAutoscaler, "iris"),
        ]
    );
    assert_eq!(p.writes[0], Write::HandOverReplicas { name: "iris".into(), replicas: 2 });
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris")), None, "the HPA owns spec.replicas now");
}

#[test]
fn gateway_mode_applies_a_service_per_track_and_the_weighted_route() {
    let mut m = with_canary(model(CM), 10);
    m.spec.traffic = Some(serde_json::from_value(json!({"gateway": {"name": "public"}})).unwrap());
    let mut seen = nothing_yet();
    seen.canary = Some(resolved("configmap://iris-v2/model.json"));
    let p = plan(&m, &seen, &settings()).unwrap();
    assert_eq!(
        writes(&p),
        [
            ("apply", Kind::Service, "iris"),
            ("apply", Kind::Deployment, "iris"),
            ("apply", Kind::Deployment, "iris-canary"),
            ("apply", Kind::Service, "iris-stable"),
            ("apply", Kind::Service, "iris-canary"),
            ("apply", Kind::HttpRoute, "iris"),
        ]
    );
    assert_eq!(replicas(body(&p, Kind::Deployment, "iris")), Some(4), "the route, not the pod count, splits traffic");
    let weights = p.gateway_weights.clone().unwrap();
    assert_eq!((weights.stable_percent, weights.canary_percent), (100, 0), "no canary pod serves yet");
    let up = after(&p, seen);
    let p = plan(&m, &up, &settings()).unwrap();
    assert_eq!(writes(&p), [("apply", Kind::HttpRoute, "iris")], "the canary serves: only the weights change");
    let weights = p.gateway_weights.unwrap();
    assert_eq!((weights.stable_percent, weights.canary_percent), (90, 10));
}

// The apply phase, request by request, against a stand-in API server.

type Handle = tower_test::mock::Handle<http::Request<kube::client::Body>, http::Response<kube::client::Body>>;

/// Sends `p`'s writes against a stand-in API server that answers `answer(method, path)` (the
/// request body is echoed as the object); returns the result and `(method, path?query, body)`.
async fn execute(
    p: &Plan,
    answer: fn(&str, &str) -> u16,
) -> (Result<apply::Applied, Error>, Vec<(String, String, Value)>) {
    let (svc, mut handle): (_, Handle) = tower_test::mock::pair();
    let client = kube::Client::new(svc, "default");
    let server = tokio::spawn(async move {
        let mut seen = vec![];
        while let Some((req, send)) = handle.next_request().await {
            let (method, uri) = (req.method().to_string(), req.uri().to_string());
            let body: Value =
                serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap_or_default();
            let code = answer(&method, req_path(&uri));
            let reply = match code {
                200 if method == "PATCH" => as_live::<Value>(&body),
                200 => json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {}}),
                _ => json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "metadata": {}, "code": code,
                            "reason": "Invalid", "message": "spec.template: invalid"}),
            };
            let response =
                http::Response::builder().status(code).body(kube::client::Body::from(reply.to_string().into_bytes()));
            send.send_response(response.unwrap());
            seen.push((method, uri, body));
        }
        seen
    });
    let result =
        tokio::time::timeout(Duration::from_secs(10), apply::execute(&client, &Metrics::new(), "iris", "ml", p)).await;
    drop(client);
    (result.unwrap(), server.await.unwrap())
}

fn req_path(uri: &str) -> &str {
    uri.split('?').next().unwrap_or(uri)
}

#[tokio::test]
async fn apply_sends_exactly_the_planned_requests_in_order() {
    let m = model(CM);
    let first = plan(&m, &nothing_yet(), &settings()).unwrap();
    let mut p = first.clone();
    p.writes.insert(1, Write::HandOverReplicas { name: "iris".into(), replicas: 2 });
    p.writes.push(Write::Delete {
        kind: Kind::Service,
        name: "iris-stable".into(),
        action: "delete Service",
        uid: Some("iris-stable-uid".into()),
    });
    let (applied, seen) = execute(&p, |_, _| 200).await;
    let applied = applied.unwrap();
    let sent: Vec<(&str, &str)> = seen.iter().map(|(m, u, _)| (m.as_str(), u.as_str())).collect();
    assert_eq!(
        sent,
        [
            ("PATCH", "/api/v1/namespaces/ml/services/iris?&force=true&fieldManager=modelship-operator"),
            ("PATCH", "/apis/apps/v1/namespaces/ml/deployments/iris?&fieldManager=modelship-operator-handover"),
            ("PATCH", "/apis/apps/v1/namespaces/ml/deployments/iris?&force=true&fieldManager=modelship-operator"),
            ("DELETE", "/api/v1/namespaces/ml/services/iris-stable?"),
        ]
    );
    assert_eq!(&seen[0].2, body(&first, Kind::Service, "iris"), "the planned body, as planned");
    assert_eq!(seen[1].2, json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 2}}));
    assert!(HANDOVER_MANAGER != modelship_crds::FIELD_MANAGER);
    assert_eq!(&seen[2].2, body(&first, Kind::Deployment, "iris"));
    assert_eq!(seen[3].2["preconditions"]["uid"], "iris-stable-uid", "only the object the plan saw is deleted");
    assert_eq!(
        applied.deployment("iris").and_then(|d| d.status.as_ref()).and_then(|s| s.available_replicas),
        Some(1),
        "status is computed from what the API server answered"
    );
}

#[tokio::test]
async fn a_refused_child_stops_the_writes_and_a_missing_route_api_is_reported() {
    let m = model(CM);
    let p = plan(&m, &nothing_yet(), &settings()).unwrap();
    let (result, seen) = execute(&p, |_, path| if path.contains("/services/") { 422 } else { 200 }).await;
    assert!(matches!(result, Err(Error::Rejected { ref kind, .. }) if kind == "Service"), "{result:?}");
    assert_eq!(seen.len(), 1, "nothing is sent after a refusal: {seen:?}");

    let route = Plan {
        writes: vec![Write::Apply {
            kind: Kind::HttpRoute,
            name: "iris".into(),
            action: "apply HTTPRoute",
            body: json!({}),
        }],
        ..p
    };
    let (result, _) = execute(&route, |_, _| 404).await;
    assert!(result.unwrap().route_missing, "a 404 on apply means the cluster has no HTTPRoute API");
}
