//! The traffic split between the stable and canary tracks. Pure: without a mesh, one Service
//! spreads requests evenly over the ready pods of both tracks, so the split is the ratio of pod
//! counts; with a Gateway, an HTTPRoute's backend weights give it exactly.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;
use kube::{Resource, ResourceExt};
use modelship_crds::{GatewayRef, MLModel, TrafficStatus};
use serde_json::{Value, json};

use crate::desired::{self, Track};

/// Pod counts of the two tracks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Split {
    pub stable: i32,
    pub canary: i32,
}

/// Pod counts behind one Service so that the canary's share of pods is as close to `percent`
/// as `total` pods allow. Both tracks keep at least one pod while 0 < percent < 100 (so a
/// one-replica model runs one of each). An explicit `canary_replicas` leaves the stable
/// Deployment at `total`.
pub fn replica_split(total: i32, percent: i32, canary_replicas: Option<i32>) -> Split {
    let total = total.max(0);
    if let Some(c) = canary_replicas {
        return Split { stable: total, canary: c.max(0) };
    }
    match percent.clamp(0, 100) {
        _ if total == 0 => Split { stable: 0, canary: 0 },
        0 => Split { stable: total, canary: 0 },
        100 => Split { stable: 0, canary: total },
        _ if total == 1 => Split { stable: 1, canary: 1 },
        p => {
            // Round half up: the nearest achievable share, since each pod is 100/total percent.
            let c = ((i64::from(total) * i64::from(p) + 50) / 100) as i32;
            let c = c.clamp(1, total - 1);
            Split { stable: total - c, canary: c }
        }
    }
}

/// Canary pods with a Gateway: the weights split the traffic, so the canary needs only enough
/// pods for its share of the load (at least one while it gets any traffic).
pub fn gateway_canary_replicas(total: i32, percent: i32, canary_replicas: Option<i32>) -> i32 {
    if let Some(c) = canary_replicas {
        return c.max(0);
    }
    let p = i64::from(percent.clamp(0, 100));
    if p == 0 || total <= 0 {
        return 0;
    }
    (((i64::from(total) * p + 99) / 100) as i32).max(1)
}

/// The split a Service over ready pods gives: each ready pod an equal share.
pub fn share_by_pods(stable_ready: i32, canary_ready: i32) -> TrafficStatus {
    let (s, c) = (i64::from(stable_ready.max(0)), i64::from(canary_ready.max(0)));
    let canary = if s + c == 0 { 0 } else { ((200 * c + (s + c)) / (2 * (s + c))) as i32 };
    let stable = if s + c == 0 { 0 } else { 100 - canary };
    TrafficStatus { mode: "Replicas".into(), stable_percent: stable, canary_percent: canary }
}

/// HTTPRoute weights: the canary gets its percent only while it has a ready pod and has not
/// failed; otherwise everything goes to the stable track.
pub fn gateway_weights(percent: i32, canary_serving: bool) -> TrafficStatus {
    let canary = if canary_serving { percent.clamp(0, 100) } else { 0 };
    TrafficStatus { mode: "Gateway".into(), stable_percent: 100 - canary, canary_percent: canary }
}

/// Name of a track's own Service, which the HTTPRoute targets.
pub fn track_service_name(model: &MLModel, track: Track) -> String {
    format!("{}-{}", model.name_any(), track.label())
}

/// The Service of one track only (Gateway mode).
pub fn track_service(model: &MLModel, track: Track) -> Service {
    let mut svc = desired::service(model);
    svc.metadata.name = Some(track_service_name(model, track));
    if let Some(spec) = svc.spec.as_mut() {
        spec.selector = Some(desired::selector_labels(model, track));
        // Only the Gateway reaches these; the model's own Service keeps the user's type.
        spec.type_ = Some("ClusterIP".into());
    }
    svc
}

/// The HTTPRoute: the parent Gateway, and one rule with weighted stable and canary backends.
pub fn http_route(model: &MLModel, gateway: &GatewayRef, weights: &TrafficStatus, with_canary: bool) -> Value {
    let port = desired::service_port(model);
    let mut parent = json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": gateway.name});
    if let Some(ns) = &gateway.namespace {
        parent["namespace"] = json!(ns);
    }
    if let Some(section) = &gateway.section_name {
        parent["sectionName"] = json!(section);
    }
    let mut backends = vec![json!({
        "name": track_service_name(model, Track::Stable), "port": port, "weight": weights.stable_percent,
    })];
    if with_canary {
        backends.push(json!({
            "name": track_service_name(model, Track::Canary), "port": port, "weight": weights.canary_percent,
        }));
    }
    let labels: BTreeMap<String, String> = desired::common_labels(model);
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {
            "name": model.name_any(),
            "namespace": model.namespace(),
            "labels": labels,
            "ownerReferences": model.controller_owner_ref(&()).map(|r| vec![r]),
        },
        "spec": {
            "parentRefs": [parent],
            "rules": [{"backendRefs": backends}],
        },
    })
}
