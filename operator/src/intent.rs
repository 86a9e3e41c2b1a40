//! Apply only what differs: whether a live child already holds everything we would apply.
//!
//! Two checks, both needed. The digest of the applied object, kept in an annotation, changes
//! whenever our intent changes, including a field we stop sending (which only an apply removes).
//! The field comparison catches someone else's edit of a field we set (a hand edit is reverted at
//! once, as a forced apply would). Fields others add and values the API server defaults are not
//! ours and are left alone, as server-side apply leaves them.

use modelship_crds::labels;
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Annotation on each child: digest of the object as we last applied it.
pub const ANNOTATION: &str = labels::APPLIED;

/// `obj` as it is sent: its JSON with the digest of that JSON in [`ANNOTATION`].
pub fn stamped<K: Serialize>(obj: &K) -> Value {
    let mut json = serde_json::to_value(obj).unwrap_or(Value::Null);
    let digest = hex::encode(&Sha256::digest(json.to_string().as_bytes())[..12]);
    if let Some(meta) = json.get_mut("metadata").and_then(Value::as_object_mut) {
        let annotations = meta.entry("annotations").or_insert_with(|| Value::Object(Default::default()));
        if let Some(a) = annotations.as_object_mut() {
            a.insert(ANNOTATION.into(), Value::String(digest));
        }
    }
    json
}

/// Whether `live` already holds everything in `stamped` (from [`stamped`]): an apply would
/// change nothing.
pub fn is_current<K: Serialize>(stamped: &Value, live: &K) -> bool {
    let Ok(live) = serde_json::to_value(live) else { return false };
    let digest = |v: &Value| v.pointer(&format!("/metadata/annotations/{}", ANNOTATION.replace('/', "~1"))).cloned();
    digest(stamped).is_some() && digest(stamped) == digest(&live) && contains(stamped, &live, None)
}

/// Whether `live` holds every value of `want`. Objects may carry more keys; lists must have the
/// same length and match item by item; a key `live` lacks must be a zero value in `want` (Go's
/// `omitempty` drops those). `key` is the key under which the pair sits, for quantities.
fn contains(want: &Value, live: &Value, key: Option<&str>) -> bool {
    match (want, live) {
        (Value::Object(w), Value::Object(l)) => w.iter().all(|(k, wv)| match l.get(k) {
            Some(lv) => contains(wv, lv, Some(k)),
            None => is_zero(wv),
        }),
        (Value::Array(w), Value::Array(l)) => w.len() == l.len() && w.iter().zip(l).all(|(a, b)| contains(a, b, None)),
        (Value::String(w), Value::String(l)) if w != l => key.is_some_and(is_quantity_key) && same_quantity(w, l),
        (w, Value::Null) => is_zero(w),
        (w, l) => w == l,
    }
}

fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// Keys whose values are resource quantities, which the API server writes back in canonical form
/// (`1000m` comes back as `1`).
fn is_quantity_key(key: &str) -> bool {
    matches!(key, "cpu" | "memory" | "ephemeral-storage" | "storage" | "averageValue" | "value")
}

/// Whether two quantity strings denote the same amount (`1000m` and `1`, `1Gi` and `1024Mi`).
fn same_quantity(a: &str, b: &str) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()) * 4.0,
        _ => false,
    }
}

fn quantity(s: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (number, scale) =
        SUFFIXES.iter().find_map(|(suffix, scale)| s.strip_suffix(suffix).map(|n| (n, *scale))).unwrap_or((s, 1.0));
    let value: f64 = number.parse().ok()?;
    value.is_finite().then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn want() -> Value {
        stamped(&json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "iris", "labels": {"app": "iris"}},
            "spec": {
                "replicas": 2,
                "template": {"spec": {
                    "containers": [{"name": "server", "image": "s:1", "ports": [{"name": "http", "containerPort": 8080}],
                                    "resources": {"requests": {"cpu": "1000m", "memory": "1Gi"}},
                                    "volumeMounts": [{"name": "m", "mountPath": "/m", "readOnly": false}]}],
                    "volumes": [{"name": "m", "emptyDir": {}}]
                }}
            }
        }))
    }

    /// What the API server returns for `want`: defaults added, quantities canonical, zero values dropped.
    fn live() -> Value {
        let mut live = want();
        live["metadata"]["uid"] = json!("u-1");
        live["metadata"]["labels"]["team"] = json!("added-by-someone");
        live["spec"]["strategy"] = json!({"type": "RollingUpdate"});
        let c = &mut live["spec"]["template"]["spec"]["containers"][0];
        c["ports"][0]["protocol"] = json!("TCP");
        c["terminationMessagePath"] = json!("/dev/termination-log");
        c["resources"]["requests"]["cpu"] = json!("1");
        c["resources"]["requests"]["memory"] = json!("1024Mi");
        c["volumeMounts"][0].as_object_mut().unwrap().remove("readOnly");
        live
    }

    #[test]
    fn what_the_server_defaults_or_others_add_is_not_a_difference() {
        assert!(is_current(&want(), &live()));
    }

    #[test]
    fn a_hand_edit_of_a_field_we_set_is_a_difference() {
        for edit in [
            "/spec/replicas",
            "/spec/template/spec/containers/0/image",
            "/metadata/labels/app",
            "/spec/template/spec/containers/0/resources/requests/cpu",
        ] {
            let mut live = live();
            *live.pointer_mut(edit).unwrap() = json!("9");
            assert!(!is_current(&want(), &live), "an edit of {edit} went unnoticed");
        }
        let mut added = live();
        added["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().push(json!({"name": "sidecar"}));
        assert!(!is_current(&want(), &added), "a container added to a list we set");
        let mut removed = live();
        removed["metadata"]["labels"].as_object_mut().unwrap().remove("app");
        assert!(!is_current(&want(), &removed), "a label we set was removed");
    }

    #[test]
    fn a_change_of_our_intent_is_a_difference_even_when_it_only_removes_a_field() {
        let mut smaller = want();
        smaller["metadata"]["annotations"] = json!({});
        smaller["spec"].as_object_mut().unwrap().remove("replicas");
        let smaller = stamped(&smaller);
        assert!(contains(&smaller["spec"], &live()["spec"], None), "every field left is still live");
        assert!(!is_current(&smaller, &live()), "the digest tells that the intent changed");
        let mut unstamped = live();
        unstamped["metadata"]["annotations"] = json!({});
        assert!(!is_current(&want(), &unstamped), "an object applied before the digest existed");
    }

    #[test]
    fn quantities_compare_by_amount_only_where_quantities_live() {
        assert!(same_quantity("1000m", "1") && same_quantity("1Gi", "1024Mi") && same_quantity("0.5", "500m"));
        assert!(!same_quantity("1", "2") && !same_quantity("1Gi", "1G") && !same_quantity("x", "x1"));
        assert!(!contains(&json!({"labels": {"k": "1000m"}}), &json!({"labels": {"k": "1"}}), None));
    }
}
