//! The traffic split: replica arithmetic for every percent and several replica counts, the
//! effective split, and the Gateway API HTTPRoute.
#![allow(clippy::unwrap_used)]

mod common;

use common::model;
use modelship_crds::GatewayRef;
use modelship_operator::desired::Track;
use modelship_operator::traffic::{self, Split};

#[test]
fn the_split_is_the_nearest_achievable_share_for_every_percent() {
    for total in 1..=12 {
        let mut last_canary = 0;
        for p in 0..=100 {
            let Split { stable, canary } = traffic::replica_split(total, p, None);
            assert!(canary >= last_canary, "monotonic in percent: total {total}, {p}%");
            last_canary = canary;
            match p {
                0 => assert_eq!((stable, canary), (total, 0)),
                100 => assert_eq!((stable, canary), (0, total)),
                _ if total == 1 => assert_eq!((stable, canary), (1, 1), "one of each for a 1-replica model"),
                _ => {
                    assert_eq!(stable + canary, total, "{total} replicas at {p}%");
                    assert!(stable >= 1 && canary >= 1, "both tracks serve at {p}%");
                    // No other count in 1..total is closer to the asked share.
                    let err = |c: i32| (f64::from(c) / f64::from(total) - f64::from(p) / 100.0).abs();
                    let best = (1..total).map(err).fold(f64::INFINITY, f64::min);
                    assert!(
                        err(canary) <= best + 1e-9,
                        "{total} replicas at {p}%: {canary} canary pods is not nearest"
                    );
                }
            }
        }
    }
}

#[test]
fn known_splits() {
    assert_eq!(traffic::replica_split(5, 20, None), Split { stable: 4, canary: 1 });
    assert_eq!(traffic::replica_split(10, 25, None), Split { stable: 7, canary: 3 }, "2.5 rounds half up");
    assert_eq!(traffic::replica_split(4, 50, None), Split { stable: 2, canary: 2 });
    assert_eq!(traffic::replica_split(3, 1, None), Split { stable: 2, canary: 1 }, "at least one canary pod");
    assert_eq!(traffic::replica_split(3, 99, None), Split { stable: 1, canary: 2 }, "at least one stable pod");
    assert_eq!(traffic::replica_split(0, 30, None), Split { stable: 0, canary: 0 }, "scaled to zero");
    assert_eq!(traffic::replica_split(4, 30, Some(2)), Split { stable: 4, canary: 2 }, "explicit canary replicas");
}

#[test]
fn gateway_mode_sizes_the_canary_for_its_share() {
    assert_eq!(traffic::gateway_canary_replicas(10, 0, None), 0);
    assert_eq!(traffic::gateway_canary_replicas(10, 1, None), 1);
    assert_eq!(traffic::gateway_canary_replicas(10, 20, None), 2);
    assert_eq!(traffic::gateway_canary_replicas(10, 21, None), 3, "rounded up");
    assert_eq!(traffic::gateway_canary_replicas(3, 100, None), 3);
    assert_eq!(traffic::gateway_canary_replicas(3, 50, Some(5)), 5);
}

#[test]
fn the_effective_split_comes_from_ready_pods_or_weights() {
    let share = |s, c| {
        let t = traffic::share_by_pods(s, c);
        assert_eq!(t.mode, "Replicas");
        (t.stable_percent, t.canary_percent)
    };
    assert_eq!(share(4, 1), (80, 20));
    assert_eq!(share(1, 2), (33, 67));
    assert_eq!(share(2, 1), (67, 33));
    assert_eq!(share(3, 0), (100, 0), "a canary with no ready pod gets nothing");
    assert_eq!(share(0, 0), (0, 0), "nothing serves");
    let w = traffic::gateway_weights(20, true);
    assert_eq!((w.mode.as_str(), w.stable_percent, w.canary_percent), ("Gateway", 80, 20));
    let w = traffic::gateway_weights(20, false);
    assert_eq!((w.stable_percent, w.canary_percent), (100, 0), "no weight to a canary that cannot serve");
}

#[test]
fn the_http_route_has_weighted_backends_to_the_track_services() {
    let m = model("configmap://iris-model/model.json");
    let gw =
        GatewayRef { name: "public".into(), namespace: Some("gateways".into()), section_name: Some("http".into()) };
    let route = traffic::http_route(&m, &gw, &traffic::gateway_weights(30, true), true);
    assert_eq!(route["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(route["kind"], "HTTPRoute");
    assert_eq!(route["metadata"]["name"], "iris");
    assert_eq!(route["metadata"]["ownerReferences"][0]["uid"], "0b3c-uid");
    let parent = &route["spec"]["parentRefs"][0];
    assert_eq!(
        (parent["name"].as_str(), parent["namespace"].as_str(), parent["sectionName"].as_str()),
        (Some("public"), Some("gateways"), Some("http"))
    );
    let backends = route["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
    assert_eq!(backends.len(), 2);
    assert_eq!((backends[0]["name"].as_str(), backends[0]["weight"].as_i64()), (Some("iris-stable"), Some(70)));
    assert_eq!((backends[1]["name"].as_str(), backends[1]["weight"].as_i64()), (Some("iris-canary"), Some(30)));
    assert_eq!(backends[0]["port"], 80);

    let plain = GatewayRef { name: "public".into(), namespace: None, section_name: None };
    let route = traffic::http_route(&m, &plain, &traffic::gateway_weights(0, false), false);
    assert!(route["spec"]["parentRefs"][0].get("namespace").is_none());
    let backends = route["spec"]["rules"][0]["backendRefs"].as_array().unwrap();
    assert_eq!(backends.len(), 1, "no canary backend without a canary");
    assert_eq!(backends[0]["weight"], 100);

    let svc = traffic::track_service(&m, Track::Canary);
    assert_eq!(svc.metadata.name.as_deref(), Some("iris-canary"));
    let sel = svc.spec.unwrap().selector.unwrap();
    assert_eq!(sel.get("modelship.dev/track").map(String::as_str), Some("canary"));
    assert_eq!(sel.get("modelship.dev/model").map(String::as_str), Some("iris"));
}
