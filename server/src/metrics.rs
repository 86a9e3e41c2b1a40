//! Prometheus metrics of the server, in the text exposition format at `GET /metrics`.

use std::sync::OnceLock;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::atomic_histogram::{AtomicHistogram as Histogram, ShardedCounter as Counter, ShardedGauge};
use crate::model::{Model, Predictions};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// The route template (`/v2/models/{name}/infer`), never the raw path: bounded cardinality.
    pub endpoint: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PredictionLabels {
    model: String,
    version: String,
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    model: String,
    version: String,
    algorithm: String,
    features: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<HttpLabels, Counter>,
    pub latency: Family<HttpLabels, Histogram, fn() -> Histogram>,
    pub in_flight: ShardedGauge,
    batch_rows: Histogram,
    load_seconds: Gauge<f64, AtomicU64>,
    info: Family<InfoLabels, Gauge>,
    predictions: Family<PredictionLabels, Counter>,
    /// Per-class counters resolved once at load time, indexed by class id (one for regression).
    by_class: std::sync::OnceLock<Vec<Counter>>,
    /// Request metric handles per (route, method) slot and common status, resolved on first use
    /// so the hot path reads an atomic instead of locking and hashing the families.
    request_cache: Vec<[OnceLock<(Counter, Histogram)>; CACHED_STATUSES.len()]>,
}

/// Statuses whose handles are cached; others go through the families.
const CACHED_STATUSES: [u16; 7] = [200, 400, 404, 405, 413, 500, 503];

impl Metrics {
    /// Metrics with `request_slots` cached (route, method) slots (see [`Metrics::observe_request`]).
    pub fn new(request_slots: usize) -> Self {
        let mut registry = Registry::with_prefix("modelship");
        let requests = Family::<HttpLabels, Counter>::default();
        let latency = Family::<HttpLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let in_flight = ShardedGauge::default();
        let batch_rows = Histogram::new([1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 10000.0]);
        let load_seconds = Gauge::<f64, AtomicU64>::default();
        let info = Family::<InfoLabels, Gauge>::default();
        let predictions = Family::<PredictionLabels, Counter>::default();
        let request_cache = (0..request_slots).map(|_| std::array::from_fn(|_| OnceLock::new())).collect();
        registry.register("http_requests", "HTTP requests by endpoint, method and status", requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register("http_requests_in_flight", "HTTP requests being served", in_flight.clone());
        registry.register("prediction_batch_rows", "Rows per prediction request", batch_rows.clone());
        registry.register("model_load_seconds", "Time taken to fetch and load the model", load_seconds.clone());
        registry.register("model_info", "The served model (always 1)", info.clone());
        registry.register("predictions", "Predictions by model version and predicted class", predictions.clone());
        Self {
            registry,
            requests,
            latency,
            in_flight,
            batch_rows,
            load_seconds,
            info,
            predictions,
            by_class: Default::default(),
            request_cache,
        }
    }

    /// Counts a request and observes its latency. `slot` identifies (route, method) and must be
    /// the same for equal `endpoint` and `method` labels.
    pub fn observe_request(&self, slot: usize, labels: &HttpLabels, seconds: f64) {
        let cell = CACHED_STATUSES
            .iter()
            .position(|s| *s == labels.status)
            .and_then(|i| self.request_cache.get(slot).map(|cells| &cells[i]));
        match cell {
            Some(cell) => {
                let (count, latency) = cell.get_or_init(|| {
                    (self.requests.get_or_create_owned(labels), self.latency.get_or_create_owned(labels))
                });
                count.inc();
                latency.observe(seconds);
            }
            None => {
                self.requests.get_or_create(labels).inc();
                self.latency.get_or_create(labels).observe(seconds);
            }
        }
    }

    /// Records the loaded model: info gauge, load time, and per-class counters.
    pub fn model_loaded(&self, model: &Model, seconds: f64) {
        self.load_seconds.set(seconds);
        self.info
            .get_or_create(&InfoLabels {
                model: model.name.clone(),
                version: model.version.clone(),
                algorithm: model.algorithm().into(),
                features: model.n_features().to_string(),
            })
            .set(1);
        let classes: Vec<String> =
            if model.class_names().is_empty() { vec![String::new()] } else { model.class_names().to_vec() };
        let counters = classes
            .into_iter()
            .map(|class| {
                self.predictions.get_or_create_owned(&PredictionLabels {
                    model: model.name.clone(),
                    version: model.version.clone(),
                    class,
                })
            })
            .collect();
        let _ = self.by_class.set(counters);
    }

    /// Counts a batch of predictions.
    pub fn predicted(&self, p: &Predictions) {
        self.batch_rows.observe(p.len() as f64);
        let Some(counters) = self.by_class.get() else {
            return;
        };
        match p {
            Predictions::Classes(ids) => {
                for &id in ids {
                    if let Some(c) = counters.get(id) {
                        c.inc();
                    }
                }
            }
            Predictions::Values(v) => {
                if let Some(c) = counters.first() {
                    c.inc_by(v.len() as u64);
                }
            }
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
