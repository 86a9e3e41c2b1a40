//! The router: every route table (`http::ROUTES`, `v2::ROUTES`), the request metrics layer that
//! labels requests by those same route templates, and the body limit.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;

use crate::error::ApiError;
use crate::http::{self, AppState, MAX_ROUTES, METHODS, Route, method_label};
use crate::metrics::HttpLabels;
use crate::v2;

/// Every route, in label-slot order.
pub fn routes() -> impl Iterator<Item = &'static Route> {
    http::ROUTES.iter().chain(v2::ROUTES)
}

/// The router, with every route, limit and the metrics layer.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.limits.max_body_bytes;
    routes()
        .fold(Router::new(), |router, route| router.route(route.path, (route.handlers)(&state)))
        .fallback(|req: Request| async move { ApiError::NoRoute(req.uri().path().to_string()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// The route's slot (`MAX_ROUTES` for an unmatched path) and its label: its own template.
fn route_label(path: Option<&MatchedPath>) -> (usize, &'static str) {
    path.and_then(|p| routes().enumerate().find(|(_, r)| r.path == p.as_str()))
        .map_or((MAX_ROUTES, "unmatched"), |(i, r)| (i.min(MAX_ROUTES), r.path))
}

/// Counts and times every request by route template, method and status.
async fn track(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let (route, endpoint) = route_label(req.extensions().get::<MatchedPath>());
    let (method_index, method) = method_label(req.method());
    let start = Instant::now();
    state.metrics.in_flight.inc();
    let resp = next.run(req).await;
    state.metrics.in_flight.dec();
    let labels = HttpLabels { endpoint, method, status: resp.status().as_u16() };
    let slot = route * (METHODS.len() + 1) + method_index;
    state.metrics.observe_request(slot, &labels, start.elapsed().as_secs_f64());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_a_metric_slot_of_its_own_and_is_declared_once() {
        let paths: Vec<&str> = routes().map(|r| r.path).collect();
        assert!(paths.len() < MAX_ROUTES, "{} routes: raise MAX_ROUTES", paths.len());
        let mut unique = paths.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), paths.len(), "a route is declared twice: {paths:?}");
        assert!(paths.contains(&"/v2/models/{name}/infer") && paths.contains(&"/predict"));
    }
}
