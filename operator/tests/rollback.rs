//! Rollback decisions: when a new stable or canary version counts as failed, and what runs then.
#![allow(clippy::unwrap_used)]

mod common;

use common::{model, settings};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus, Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use modelship_crds::{ModelSpec, ModelUri, labels};
use modelship_operator::desired::{self, ServerPods, SourceVersion};
use modelship_operator::health::{self, Health};
use modelship_operator::rollback::{self, StableChoice};

fn live(m: &modelship_crds::MLModel, status: DeploymentStatus) -> Deployment {
    let uri = ModelUri::parse(&m.spec.model.uri).unwrap();
    let mut d = desired::deployment(m, &ServerPods::stable(m, &uri, &SourceVersion::default()), &settings());
    d.metadata.generation = Some(2);
    d.status = Some(DeploymentStatus { observed_generation: Some(2), ..status });
    d
}

fn hash(m: &modelship_crds::MLModel) -> String {
    desired::rollout_hash(m, &m.spec.model, &settings(), &SourceVersion::default())
}

fn pod(track: &str, hash: &str, waiting: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            labels: Some([(labels::TRACK.to_string(), track.to_string())].into()),
            annotations: Some([(labels::ROLLOUT_HASH.to_string(), hash.to_string())].into()),
            ..Default::default()
        },
        spec: None,
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "server".into(),
                state: Some(ContainerState {
                    waiting: waiting.map(|r| ContainerStateWaiting { reason: Some(r.into()), message: None }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

fn model_spec(version: &str) -> ModelSpec {
    serde_json::from_value(serde_json::json!({"uri": "configmap://iris-model/model.json", "version": version})).unwrap()
}

#[test]
fn health_of_the_new_version() {
    let m = model("configmap://iris-model/model.json");
    let h = hash(&m);
    let complete = live(
        &m,
        DeploymentStatus {
            replicas: Some(1),
            updated_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(health::health(Some(&complete), &h, &[]), Health::Available);
    assert_eq!(health::health(Some(&complete), "another-hash", &[]), Health::Progressing, "not on that template yet");
    assert_eq!(health::health(None, &h, &[]), Health::Progressing);

    let rolling = live(
        &m,
        DeploymentStatus {
            replicas: Some(2),
            updated_replicas: Some(1),
            available_replicas: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(health::health(Some(&rolling), &h, &[pod("stable", &h, None)]), Health::Progressing);
    let crashing = [pod("stable", &h, Some("CrashLoopBackOff"))];
    assert!(
        matches!(health::health(Some(&rolling), &h, &crashing), Health::Failed { reason, .. } if reason == "CrashLoopBackOff")
    );

    let deadline = live(
        &m,
        DeploymentStatus {
            replicas: Some(2),
            updated_replicas: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "False".into(),
                reason: Some("ProgressDeadlineExceeded".into()),
                message: Some("ReplicaSet has timed out progressing".into()),
                ..Default::default()
            }]),
            ..Default::default()
        },
    );
    assert!(
        matches!(health::health(Some(&deadline), &h, &[]), Health::Failed { reason, .. } if reason == "ProgressDeadlineExceeded")
    );
}

#[test]
fn pods_are_matched_by_track_and_template() {
    let pods = [pod("stable", "a", None), pod("stable", "b", None), pod("canary", "a", None)];
    assert_eq!(health::pods_of(&pods, "stable", "a").len(), 1);
    assert_eq!(health::pods_of(&pods, "canary", "a").len(), 1);
    assert_eq!(health::pods_of(&pods, "canary", "b").len(), 0);
}

#[test]
fn a_failed_stable_version_rolls_back_to_the_last_good_model() {
    let (v1, v2) = (model_spec("v1"), model_spec("v2"));
    let failed =
        Health::Failed { reason: "CrashLoopBackOff".into(), message: "1 server container(s) cannot start".into() };
    match rollback::stable_choice(&v2, "h2", &failed, Some(&v1), None, None) {
        StableChoice::LastGood { model, newly: Some(msg) } => {
            assert_eq!(model, v1);
            assert!(msg.contains("v2 failed (CrashLoopBackOff") && msg.contains("rolled back to v1"), "{msg}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    // Once recorded, it stays rolled back, even while the failed pods are gone.
    assert_eq!(
        rollback::stable_choice(&v2, "h2", &Health::Progressing, Some(&v1), Some("h2"), None),
        StableChoice::LastGood { model: v1.clone(), newly: None }
    );
    // A new spec (another hash) is tried again.
    assert_eq!(
        rollback::stable_choice(&model_spec("v3"), "h3", &Health::Progressing, Some(&v1), Some("h2"), None),
        StableChoice::Spec
    );
    // Nothing to go back to: the first version, or the last good one is the spec itself.
    assert_eq!(rollback::stable_choice(&v2, "h2", &failed, None, None, None), StableChoice::Spec);
    assert_eq!(rollback::stable_choice(&v1, "h1", &failed, Some(&v1), None, None), StableChoice::Spec);
    // An MLflow alias that moved to a failing version: the message names the alias and the version.
    let alias = ModelSpec { uri: "models:/iris@champion".into(), version: None, ..v2.clone() };
    match rollback::stable_choice(&alias, "h4", &failed, Some(&v1), None, Some("4")) {
        StableChoice::LastGood { newly: Some(msg), .. } => {
            assert!(msg.starts_with("models:/iris@champion (version 4) failed (CrashLoopBackOff"), "{msg}");
        }
        other => panic!("expected a rollback, got {other:?}"),
    }
    // Healthy or still rolling out: the spec.
    assert_eq!(rollback::stable_choice(&v2, "h2", &Health::Progressing, Some(&v1), None, None), StableChoice::Spec);
    assert_eq!(rollback::stable_choice(&v2, "h2", &Health::Available, Some(&v1), None, None), StableChoice::Spec);
}

#[test]
fn a_failed_canary_is_reported_once_and_kept_down() {
    let failed = Health::Failed { reason: "ProgressDeadlineExceeded".into(), message: "timed out".into() };
    let msg = rollback::canary_failed_now(&failed, "c1", None).unwrap();
    assert!(msg.contains("ProgressDeadlineExceeded") && msg.contains("scaled to zero"), "{msg}");
    assert_eq!(rollback::canary_failed_now(&failed, "c1", Some("c1")), None, "already rolled back");
    assert!(rollback::canary_failed_now(&failed, "c2", Some("c1")).is_some(), "a new canary that fails too");
    assert_eq!(rollback::canary_failed_now(&Health::Progressing, "c1", None), None);
    assert_eq!(rollback::canary_failed_now(&Health::Available, "c1", None), None);
}
