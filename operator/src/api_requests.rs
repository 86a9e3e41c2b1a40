//! Counts every request the operator sends to the API server, by verb and resource, so the cost
//! of a reconcile is measured (`modelship_operator_api_requests_total`), not assumed.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// The resources the operator talks to; anything else is counted as `other` (labels stay bounded).
const RESOURCES: &[&str] = &[
    "mlmodels",
    "mlmodels/status",
    "deployments",
    "services",
    "pods",
    "configmaps",
    "persistentvolumeclaims",
    "horizontalpodautoscalers",
    "httproutes",
    "leases",
    "events",
];

/// The verb and resource of a request, as the API server's audit log would name them: `get`,
/// `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> (&'static str, &'static str) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    // /api/v1/... or /apis/GROUP/VERSION/...
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or(&[]);
    let rest = match rest {
        ["namespaces", _, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
        [] => (String::new(), false),
    };
    let resource = RESOURCES.iter().copied().find(|r| *r == resource).unwrap_or("other");
    let watching = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let verb = match *method {
        Method::GET if watching => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

/// Whether a verb changes the cluster.
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// A tower layer counting each request into [`Metrics`] before it is sent.
#[derive(Clone)]
pub struct CountRequests(pub Arc<Metrics>);

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted { inner, metrics: self.0.clone() }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query());
        self.metrics.api_request(verb, resource);
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let cases = [
            (Method::GET, "/apis/apps/v1/namespaces/ns/deployments/iris", None, ("get", "deployments")),
            (Method::GET, "/apis/apps/v1/deployments", Some("labelSelector=a%3Db"), ("list", "deployments")),
            (Method::GET, "/apis/apps/v1/deployments", Some("watch=true&resourceVersion=5"), ("watch", "deployments")),
            (Method::GET, "/api/v1/namespaces/ns/pods", Some("labelSelector=x"), ("list", "pods")),
            (
                Method::PATCH,
                "/apis/modelship.dev/v1alpha1/namespaces/ns/mlmodels/iris/status",
                None,
                ("patch", "mlmodels/status"),
            ),
            (Method::GET, "/apis/modelship.dev/v1alpha1/mlmodels", Some("limit=1"), ("list", "mlmodels")),
            (
                Method::PATCH,
                "/api/v1/namespaces/ns/services/iris",
                Some("fieldManager=m&force=true"),
                ("patch", "services"),
            ),
            (Method::DELETE, "/apis/apps/v1/namespaces/ns/deployments/iris-canary", None, ("delete", "deployments")),
            (Method::DELETE, "/api/v1/namespaces/ns/pods", None, ("deletecollection", "pods")),
            (Method::POST, "/apis/events.k8s.io/v1/namespaces/ns/events", None, ("create", "events")),
            (Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/ns/leases/op", None, ("update", "leases")),
            (Method::GET, "/api/v1/namespaces/ns", None, ("get", "other")),
            (Method::GET, "/apis/example.com/v1/widgets", None, ("list", "other")),
            (Method::GET, "/version", None, ("list", "other")),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(classify(&method, path, query), want, "{method} {path}?{query:?}");
        }
        assert!(is_write("patch") && is_write("create") && !is_write("watch") && !is_write("get"));
    }
}
