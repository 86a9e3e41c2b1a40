//! A histogram whose `observe` is a few atomic adds. prometheus-client's own takes a mutex per
//! observation, which was the largest single cost on the request path (measured with bench/).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

#[derive(Debug)]
struct Inner {
    upper_bounds: Vec<f64>,
    /// Per-bucket counts, the last one for +Inf.
    counts: Vec<AtomicU64>,
    /// Sum of observations, as f64 bits.
    sum: AtomicU64,
}

/// A classic Prometheus histogram with fixed bucket bounds; clones share the same data.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<Inner>);

impl AtomicHistogram {
    pub fn new(upper_bounds: impl IntoIterator<Item = f64>) -> Self {
        let upper_bounds: Vec<f64> = upper_bounds.into_iter().collect();
        let counts = (0..=upper_bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(Inner { upper_bounds, counts, sum: AtomicU64::new(0f64.to_bits()) }))
    }

    pub fn observe(&self, v: f64) {
        let i = self.0.upper_bounds.iter().position(|b| v <= *b).unwrap_or(self.0.upper_bounds.len());
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .0
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
    }

    /// Count and sum of the observations so far.
    pub fn snapshot(&self) -> (u64, f64) {
        let count = self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        (count, f64::from_bits(self.0.sum.load(Ordering::Relaxed)))
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .0
            .upper_bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.0.counts.iter().map(|c| c.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = f64::from_bits(self.0.sum.load(Ordering::Relaxed));
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_sum_and_count() {
        let h = AtomicHistogram::new([0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 7.0] {
            h.observe(v);
        }
        assert_eq!(h.snapshot(), (4, 7.65));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("x", "x", h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        assert!(out.contains("x_bucket{le=\"0.1\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"1.0\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n") && out.contains("x_sum 7.65\n"), "{out}");
    }
}
