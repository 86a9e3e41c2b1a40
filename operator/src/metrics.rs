//! Operator metrics: reconcile count, errors and duration, API requests, and leadership.

use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Family<ErrorLabels, Counter>,
    duration: Histogram,
    status_writes: Counter,
    applies: Family<WriteLabels, Counter>,
    unchanged: Family<WriteLabels, Counter>,
    requests: Family<RequestLabels, Counter>,
    watch_events: Family<ResourceLabels, Counter>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("modelship_operator");
        let reconciles = Counter::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let status_writes = Counter::default();
        let applies = Family::<WriteLabels, Counter>::default();
        let unchanged = Family::<WriteLabels, Counter>::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let watch_events = Family::<ResourceLabels, Counter>::default();
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed, by error", errors.clone());
        registry.register("reconcile_duration_seconds", "Duration of a reconcile", duration.clone());
        registry.register("status_writes", "MLModel status patches sent", status_writes.clone());
        registry.register("applies", "Server-side applies sent, by action", applies.clone());
        registry.register(
            "applies_skipped",
            "Applies not sent because the live object already matched, by action",
            unchanged.clone(),
        );
        registry.register("api_requests", "Requests sent to the API server, by verb and resource", requests.clone());
        registry.register("watch_events", "Events received by the watches, by resource", watch_events.clone());
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        Self {
            registry,
            reconciles,
            errors,
            duration,
            status_writes,
            applies,
            unchanged,
            requests,
            watch_events,
            leader,
        }
    }

    /// Counts a reconcile and observes its duration when the guard drops.
    pub fn reconcile_timer(&self) -> ReconcileTimer<'_> {
        self.reconciles.inc();
        ReconcileTimer { start: Instant::now(), histogram: &self.duration }
    }

    pub fn error(&self, label: &'static str) {
        self.errors.get_or_create(&ErrorLabels { error: label }).inc();
    }

    pub fn status_written(&self) {
        self.status_writes.inc();
    }

    pub fn applied(&self, action: &'static str) {
        self.applies.get_or_create(&WriteLabels { action }).inc();
    }

    pub fn apply_skipped(&self, action: &'static str) {
        self.unchanged.get_or_create(&WriteLabels { action }).inc();
    }

    pub fn api_request(&self, verb: &'static str, resource: &'static str) {
        self.requests.get_or_create(&RequestLabels { verb, resource }).inc();
    }

    pub fn watch_event(&self, resource: &'static str) {
        self.watch_events.get_or_create(&ResourceLabels { resource }).inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Drop guard observing a reconcile's duration.
pub struct ReconcileTimer<'a> {
    start: Instant,
    histogram: &'a Histogram,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
