//! Status computation from Deployment and pod states.
#![allow(clippy::unwrap_used)]

mod common;

use common::model;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus};
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus, Pod, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use modelship_crds::MLModelStatus;
use modelship_crds::condition::{DEGRADED, PROGRESSING, READY};
use modelship_crds::reason;
use modelship_operator::status::{self, Observed, SourceProblem};

fn now() -> Time {
    Time("2026-12-01T10:00:00Z".parse().unwrap())
}

/// A Deployment at `generation` (observed `observed`) wanting `want` replicas.
fn deploy(generation: i64, observed: i64, want: i32, replicas: i32, updated: i32, available: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta { generation: Some(generation), ..Default::default() },
        spec: Some(DeploymentSpec { replicas: Some(want), ..Default::default() }),
        status: Some(DeploymentStatus {
            observed_generation: Some(observed),
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            available_replicas: Some(available),
            ready_replicas: Some(available),
            ..Default::default()
        }),
    }
}

fn cond<'a>(s: &'a MLModelStatus, t: &str) -> (&'a str, &'a str) {
    let c = s.condition(t).unwrap_or_else(|| panic!("no {t} condition"));
    (c.status.as_str(), c.reason.as_str())
}

fn compute(d: Option<&Deployment>, pods: &[Pod], problem: Option<&SourceProblem>) -> MLModelStatus {
    status::compute(
        &model("configmap://iris-model/model.json"),
        &Observed { deployment: d, pods, source_problem: problem, ..Default::default() },
        &now(),
    )
}

#[test]
fn available_is_ready() {
    let d = deploy(2, 2, 3, 3, 3, 3);
    let s = compute(Some(&d), &[], None);
    assert_eq!(cond(&s, READY), ("True", "Available"));
    assert_eq!(cond(&s, PROGRESSING), ("False", reason::ROLLOUT_COMPLETE));
    assert_eq!(cond(&s, DEGRADED), ("False", reason::AS_EXPECTED));
    assert_eq!((s.replicas, s.ready_replicas, s.updated_replicas), (3, 3, 3));
    assert_eq!(s.replica_summary.as_deref(), Some("3/3"));
    assert_eq!(s.observed_generation, Some(3));
    assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
    assert_eq!(s.selector.as_deref(), Some("modelship.dev/model=iris"));
    assert_eq!(s.url.as_deref(), Some("http://iris.ml.svc"));
    assert_eq!(s.model_version.as_deref(), Some("v1"));
}

#[test]
fn a_new_generation_not_yet_observed_is_not_ready() {
    // Right after our apply: the Deployment controller has not seen generation 5 yet, while
    // the old status still says everything is available.
    let d = deploy(5, 4, 3, 3, 3, 3);
    let s = compute(Some(&d), &[], None);
    assert_eq!(cond(&s, READY), ("False", reason::ROLLOUT_IN_PROGRESS));
    assert_eq!(cond(&s, PROGRESSING), ("True", reason::ROLLOUT_IN_PROGRESS));
}

#[test]
fn rollout_in_flight_states_are_not_ready() {
    for (d, want) in [
        (deploy(2, 2, 3, 4, 1, 3), "1 of 3 replicas updated"),
        (deploy(2, 2, 3, 4, 3, 3), "1 old replicas are pending termination"),
        (deploy(2, 2, 3, 3, 3, 2), "2 of 3 updated replicas are available"),
    ] {
        let s = compute(Some(&d), &[], None);
        assert_eq!(cond(&s, READY), ("False", reason::ROLLOUT_IN_PROGRESS), "{want}");
        assert_eq!(s.condition(READY).unwrap().message, want);
    }
}

#[test]
fn a_scale_down_is_in_progress_until_the_surplus_pods_are_gone() {
    let d = deploy(3, 3, 4, 5, 5, 5);
    let st = compute(Some(&d), &[], None);
    assert_eq!(cond(&st, READY), ("False", reason::ROLLOUT_IN_PROGRESS));
    assert!(st.condition(READY).unwrap().message.contains("1 surplus replicas"), "{:?}", st.condition(READY));
}

#[test]
fn insufficient_replicas_with_a_missing_deployment() {
    let s = compute(None, &[], None);
    assert_eq!(cond(&s, READY), ("False", reason::CREATING));
    assert_eq!(cond(&s, PROGRESSING), ("True", reason::CREATING));
}

#[test]
fn progress_deadline_exceeded_is_degraded() {
    let mut d = deploy(2, 2, 2, 2, 2, 1);
    d.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: Some(reason::PROGRESS_DEADLINE_EXCEEDED.into()),
        message: Some("ReplicaSet \"iris-abc\" has timed out progressing.".into()),
        ..Default::default()
    }]);
    let s = compute(Some(&d), &[], None);
    assert_eq!(cond(&s, DEGRADED), ("True", reason::PROGRESS_DEADLINE_EXCEEDED));
    assert_eq!(cond(&s, READY).0, "False");
    assert_eq!(cond(&s, PROGRESSING), ("False", reason::PROGRESS_DEADLINE_EXCEEDED));
}

fn pod(name: &str, waiting: Option<&str>, last: Option<ContainerStateTerminated>) -> Pod {
    Pod {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        spec: None,
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "server".into(),
                state: waiting.map(|r| ContainerState {
                    waiting: Some(ContainerStateWaiting {
                        reason: Some(r.into()),
                        message: Some("back-off 10s restarting".into()),
                    }),
                    ..Default::default()
                }),
                last_state: last.map(|t| ContainerState { terminated: Some(t), ..Default::default() }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

#[test]
fn crash_looping_pods_degrade_without_naming_pods() {
    let d = deploy(2, 2, 2, 2, 2, 0);
    let pods =
        [pod("iris-7d9-abcde", Some("CrashLoopBackOff"), None), pod("iris-7d9-fghij", Some("CrashLoopBackOff"), None)];
    let s = compute(Some(&d), &pods, None);
    assert_eq!(cond(&s, DEGRADED), ("True", "CrashLoopBackOff"));
    let msg = &s.condition(DEGRADED).unwrap().message;
    assert!(msg.starts_with("2 server container(s) cannot start"), "{msg}");
    assert!(!msg.contains("iris-7d9"), "pod names churn; keep them out: {msg}");
    assert_eq!(cond(&s, READY).0, "False");
}

#[test]
fn a_model_that_fails_to_load_names_the_cause() {
    let d = deploy(2, 2, 1, 1, 1, 0);
    let term = ContainerStateTerminated {
        exit_code: 1,
        reason: Some("Error".into()),
        message: Some(
            "modelship-server: model failed to load: model checksum mismatch: expected sha256 aa, got bb\n".into(),
        ),
        ..Default::default()
    };
    let s = compute(Some(&d), &[pod("p", Some("CrashLoopBackOff"), Some(term))], None);
    assert_eq!(cond(&s, DEGRADED), ("True", reason::MODEL_LOAD_FAILED));
    assert!(s.condition(DEGRADED).unwrap().message.contains("checksum mismatch"));
}

#[test]
fn oom_killed_pods_suggest_more_memory() {
    let d = deploy(2, 2, 1, 1, 1, 0);
    let term = ContainerStateTerminated { exit_code: 137, reason: Some("OOMKilled".into()), ..Default::default() };
    let s = compute(Some(&d), &[pod("p", Some("CrashLoopBackOff"), Some(term))], None);
    assert!(s.condition(DEGRADED).unwrap().message.contains("limits.memory"));
}

#[test]
fn pod_problems_are_ignored_once_rolled_out() {
    let d = deploy(2, 2, 1, 1, 1, 1);
    let s = compute(Some(&d), &[pod("p", Some("CrashLoopBackOff"), None)], None);
    assert_eq!(cond(&s, READY).0, "True");
}

#[test]
fn a_missing_configmap_degrades_and_says_the_old_version_keeps_serving() {
    let d = deploy(2, 2, 2, 2, 2, 2);
    let p = SourceProblem::ConfigMapNotFound { name: "iris-model-v2".into() };
    let s = compute(Some(&d), &[], Some(&p));
    assert_eq!(cond(&s, DEGRADED), ("True", reason::CONFIGMAP_NOT_FOUND));
    assert_eq!(cond(&s, READY), ("False", reason::CONFIGMAP_NOT_FOUND));
    let ready = &s.condition(READY).unwrap().message;
    assert!(ready.contains("iris-model-v2") && ready.contains("previous version keeps serving on 2"), "{ready}");
    let key = SourceProblem::ConfigMapKeyNotFound { name: "m".into(), key: "k".into() };
    assert_eq!(cond(&compute(None, &[], Some(&key)), DEGRADED), ("True", reason::CONFIGMAP_KEY_NOT_FOUND));
    let pvc = SourceProblem::PvcNotFound { claim: "c".into() };
    assert_eq!(cond(&compute(None, &[], Some(&pvc)), DEGRADED), ("True", reason::PVC_NOT_FOUND));
}

#[test]
fn scaled_to_zero_is_not_ready() {
    let d = deploy(2, 2, 0, 0, 0, 0);
    assert_eq!(cond(&compute(Some(&d), &[], None), READY), ("False", reason::SCALED_TO_ZERO));
}

#[test]
fn transition_times_are_kept_when_status_does_not_change() {
    let d = deploy(2, 2, 1, 1, 1, 1);
    let first = compute(Some(&d), &[], None);
    let later = Time("2026-12-01T11:00:00Z".parse().unwrap());
    let mut again = status::compute(
        &model("configmap://iris-model/model.json"),
        &Observed { deployment: Some(&d), pods: &[], ..Default::default() },
        &later,
    );
    assert_ne!(again, first, "fresh times differ");
    status::keep_transition_times(Some(&first), &mut again);
    assert_eq!(again, first, "a no-op reconcile computes the stored status, so nothing is written");

    let progressing = deploy(3, 3, 1, 2, 1, 1);
    let mut changed = status::compute(
        &model("configmap://iris-model/model.json"),
        &Observed { deployment: Some(&progressing), pods: &[], ..Default::default() },
        &later,
    );
    status::keep_transition_times(Some(&first), &mut changed);
    assert_eq!(changed.condition(READY).unwrap().last_transition_time, later, "Ready flipped: new time");
    assert_eq!(changed.condition(DEGRADED).unwrap().last_transition_time, now(), "Degraded unchanged: old time");
}

#[test]
fn ready_needs_the_current_generation() {
    let m = model("configmap://iris-model/model.json");
    let d = deploy(2, 2, 1, 1, 1, 1);
    let mut s = compute(Some(&d), &[], None);
    assert!(status::is_ready(&m, &s));
    s.observed_generation = Some(2);
    assert!(!status::is_ready(&m, &s));
}

mod canary_and_rollback {
    use modelship_crds::condition::CANARY_READY;
    use modelship_crds::{CanarySpec, MLModel, ModelSpec, RollbackStatus, TrafficStatus};
    use modelship_operator::health::Health;
    use modelship_operator::status::CanaryObserved;

    use super::*;

    fn canary_spec() -> CanarySpec {
        serde_json::from_value(serde_json::json!({
            "model": {"uri": "configmap://iris-v2/model.json", "version": "v2"}, "trafficPercent": 20,
        }))
        .unwrap()
    }

    fn split() -> Option<TrafficStatus> {
        Some(TrafficStatus { mode: "Replicas".into(), stable_percent: 80, canary_percent: 20 })
    }

    fn with(m: &MLModel, obs: Observed<'_>) -> MLModelStatus {
        status::compute(m, &obs, &now())
    }

    #[test]
    fn an_available_canary_is_ready_and_counts_in_the_totals() {
        let m = model("configmap://iris-model/model.json");
        let (stable, canary_d, spec) = (deploy(3, 3, 4, 4, 4, 4), deploy(1, 1, 1, 1, 1, 1), canary_spec());
        let canary = CanaryObserved {
            spec: &spec,
            deployment: Some(&canary_d),
            health: Health::Available,
            source_problem: None,
            rolled_back: None,
        };
        let st = with(
            &m,
            Observed { deployment: Some(&stable), canary: Some(canary), traffic: split(), ..Default::default() },
        );
        assert_eq!(cond(&st, READY), ("True", "Available"));
        assert_eq!(cond(&st, CANARY_READY), ("True", "Available"));
        assert!(st.condition(CANARY_READY).unwrap().message.contains("serving 20% of requests"));
        assert_eq!((st.replicas, st.ready_replicas, st.replica_summary.as_deref()), (5, 5, Some("5/5")));
        assert_eq!((st.stable_version.as_deref(), st.canary_version.as_deref()), (Some("v1"), Some("v2")));
        assert_eq!((st.stable_ready_replicas, st.canary_ready_replicas), (Some(4), Some(1)));
        assert_eq!(st.traffic, split());
        assert_eq!(st.last_good_model.as_ref(), Some(&m.spec.model), "a Ready stable track is the last good model");
    }

    #[test]
    fn a_canary_still_rolling_out_keeps_the_model_not_ready() {
        let m = model("configmap://iris-model/model.json");
        let (stable, canary_d, spec) = (deploy(3, 3, 5, 5, 5, 5), deploy(1, 1, 1, 1, 1, 0), canary_spec());
        let canary = CanaryObserved {
            spec: &spec,
            deployment: Some(&canary_d),
            health: Health::Progressing,
            source_problem: None,
            rolled_back: None,
        };
        let st = with(&m, Observed { deployment: Some(&stable), canary: Some(canary), ..Default::default() });
        assert_eq!(cond(&st, READY), ("False", reason::ROLLOUT_IN_PROGRESS));
        assert_eq!(cond(&st, PROGRESSING), ("True", reason::CANARY_ROLLOUT_IN_PROGRESS));
        assert_eq!(cond(&st, CANARY_READY), ("False", reason::ROLLOUT_IN_PROGRESS));
        assert_eq!(cond(&st, DEGRADED).0, "False");
    }

    #[test]
    fn a_rolled_back_canary_degrades_the_model() {
        let m = model("configmap://iris-model/model.json");
        let (stable, canary_d, spec) = (deploy(3, 3, 5, 5, 5, 5), deploy(2, 2, 0, 0, 0, 0), canary_spec());
        let msg = "canary failed (CrashLoopBackOff: 1 server container(s) cannot start); scaled to zero";
        let canary = CanaryObserved {
            spec: &spec,
            deployment: Some(&canary_d),
            health: Health::Progressing,
            source_problem: None,
            rolled_back: Some(msg),
        };
        let st = with(&m, Observed { deployment: Some(&stable), canary: Some(canary), ..Default::default() });
        assert_eq!(cond(&st, DEGRADED), ("True", reason::CANARY_ROLLED_BACK));
        assert_eq!(st.condition(DEGRADED).unwrap().message, msg);
        assert_eq!(cond(&st, READY), ("False", reason::CANARY_ROLLED_BACK));
        assert_eq!(cond(&st, CANARY_READY), ("False", reason::CANARY_ROLLED_BACK));
        assert_eq!(cond(&st, PROGRESSING).0, "False", "nothing is in flight");
    }

    #[test]
    fn a_missing_canary_source_names_the_canary_field() {
        let m = model("configmap://iris-model/model.json");
        let (stable, spec) = (deploy(3, 3, 5, 5, 5, 5), canary_spec());
        let problem = SourceProblem::ConfigMapNotFound { name: "iris-v2".into() };
        let canary = CanaryObserved {
            spec: &spec,
            deployment: None,
            health: Health::Progressing,
            source_problem: Some(&problem),
            rolled_back: None,
        };
        let st = with(&m, Observed { deployment: Some(&stable), canary: Some(canary), ..Default::default() });
        assert_eq!(cond(&st, DEGRADED), ("True", reason::CONFIGMAP_NOT_FOUND));
        assert!(st.condition(DEGRADED).unwrap().message.contains("spec.canary.model.uri"));
        assert_eq!(cond(&st, CANARY_READY), ("False", reason::CONFIGMAP_NOT_FOUND));
    }

    #[test]
    fn a_rolled_back_stable_version_reports_what_serves() {
        let mut m = model("configmap://iris-model/model.json");
        m.spec.model.version = Some("v2".into());
        let good: ModelSpec =
            serde_json::from_value(serde_json::json!({"uri": "configmap://iris-model/model.json", "version": "v1"}))
                .unwrap();
        m.status = Some(MLModelStatus { last_good_model: Some(good.clone()), ..Default::default() });
        let stable = deploy(3, 3, 2, 2, 2, 2);
        let rollback = RollbackStatus {
            failed_stable: Some("abc".into()),
            stable_message: Some("v2 failed".into()),
            ..Default::default()
        };
        let st = with(
            &m,
            Observed {
                deployment: Some(&stable),
                served: Some(&good),
                rolled_back: Some("v2 failed (CrashLoopBackOff: ...); rolled back to v1"),
                rollback: Some(rollback.clone()),
                ..Default::default()
            },
        );
        assert_eq!(cond(&st, READY), ("False", reason::ROLLED_BACK));
        assert_eq!(cond(&st, DEGRADED), ("True", reason::ROLLED_BACK));
        assert_eq!(cond(&st, PROGRESSING), ("False", reason::ROLLED_BACK));
        assert_eq!(st.model_version.as_deref(), Some("v1"), "the version that serves");
        assert_eq!(st.last_good_model, Some(good), "still the last good model, not the failed spec");
        assert_eq!(st.rollback, Some(rollback));
        assert!(st.condition(CANARY_READY).is_none() && st.traffic.is_none());
    }

    #[test]
    fn a_gateway_without_the_gateway_api_degrades_and_says_what_to_install() {
        let m = model("configmap://iris-model/model.json");
        let stable = deploy(3, 3, 2, 2, 2, 2);
        let msg = "spec.traffic.gateway is set, but this cluster does not serve HTTPRoute";
        let st = with(&m, Observed { deployment: Some(&stable), gateway_problem: Some(msg), ..Default::default() });
        assert_eq!(cond(&st, DEGRADED), ("True", reason::GATEWAY_API_UNAVAILABLE));
        assert_eq!(cond(&st, READY), ("False", reason::GATEWAY_API_UNAVAILABLE));
        assert_eq!(st.condition(DEGRADED).unwrap().message, msg);
        assert!(st.traffic.is_none());
    }

    #[test]
    fn the_last_good_model_is_kept_while_not_ready() {
        let mut m = model("configmap://iris-model/model.json");
        let old: ModelSpec =
            serde_json::from_value(serde_json::json!({"uri": "configmap://old/model.json", "version": "v0"})).unwrap();
        m.status = Some(MLModelStatus { last_good_model: Some(old.clone()), ..Default::default() });
        let rolling = deploy(3, 3, 2, 3, 1, 2);
        let st = with(&m, Observed { deployment: Some(&rolling), ..Default::default() });
        assert_eq!(st.last_good_model, Some(old));
    }
}

#[test]
fn an_mlflow_alias_records_its_version_and_the_registry_condition() {
    use modelship_crds::ResolvedModelStatus;
    use modelship_operator::desired::RegistrySource;
    let mut m = model("models:/iris@champion");
    m.spec.model.version = None;
    let d = deploy(2, 2, 1, 1, 1, 1);
    let resolved = ResolvedModelStatus {
        uri: "models:/iris@champion".into(),
        resolved_version: Some("2".into()),
        source: Some("mlflow-artifacts:/0/models/m-1/artifacts".into()),
        flavor: Some("sklearn".into()),
    };
    let source =
        RegistrySource { tracking_uri: "http://mlflow:5000".into(), status: resolved.clone(), unavailable: None };
    let pinned =
        modelship_crds::ModelSpec { uri: "models:/iris/2".into(), version: Some("2".into()), ..m.spec.model.clone() };
    let obs = |r| Observed {
        deployment: Some(&d),
        pods: &[],
        registry: Some(r),
        pinned: Some(&pinned),
        ..Default::default()
    };
    let s = status::compute(&m, &obs(&source), &now());
    assert_eq!(cond(&s, READY), ("True", "Available"));
    assert_eq!(cond(&s, "RegistryAvailable"), ("True", reason::RESOLVED));
    assert_eq!(s.model.as_ref(), Some(&resolved));
    assert_eq!(s.model_version.as_deref(), Some("2"), "the VERSION column shows the registry version");
    // A rollback must return to this version, not to wherever the alias points by then.
    assert_eq!(s.last_good_model.as_ref().map(|g| g.uri.as_str()), Some("models:/iris/2"));

    let down = RegistrySource {
        unavailable: Some("MLflow tracking server unavailable at http://mlflow:5000: refused".into()),
        ..source.clone()
    };
    let s = status::compute(&m, &obs(&down), &now());
    assert_eq!(cond(&s, READY), ("True", "Available"), "the running version keeps serving");
    assert_eq!(cond(&s, "RegistryAvailable"), ("False", reason::REGISTRY_UNAVAILABLE));
    assert!(s.condition("RegistryAvailable").unwrap().message.contains("http://mlflow:5000"));

    let problem = SourceProblem::Registry {
        reason: reason::REGISTRY_CREDENTIALS_REFUSED,
        message: "refused the credentials".into(),
    };
    let s = status::compute(
        &m,
        &Observed { deployment: Some(&d), source_problem: Some(&problem), ..Default::default() },
        &now(),
    );
    assert_eq!(cond(&s, DEGRADED), ("True", reason::REGISTRY_CREDENTIALS_REFUSED));
}
