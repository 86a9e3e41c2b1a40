//! Metrics for the request path that scale across cores: every value is split into per-thread
//! shards on separate cache lines and summed only when `/metrics` is read. prometheus-client's
//! own histogram takes a mutex per observation, and a single shared atomic bounces between the
//! cores of the worker threads; both cost a third of the throughput in bench/ on two cores.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};

/// Number of shards; threads are spread over them round-robin.
const SHARDS: usize = 8;
/// Most buckets a histogram may have (plus +Inf).
const MAX_BUCKETS: usize = 16;

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
    SHARD.with(|s| *s)
}

#[repr(align(128))]
#[derive(Default, Debug)]
struct PaddedU64(AtomicU64);

#[repr(align(128))]
#[derive(Default, Debug)]
struct PaddedI64(AtomicI64);

/// A counter; clones share the same value.
#[derive(Clone, Debug, Default)]
pub struct ShardedCounter(Arc<[PaddedU64; SHARDS]>);

impl ShardedCounter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0[shard()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedCounter {
    const TYPE: MetricType = MetricType::Counter;
}

impl EncodeMetric for ShardedCounter {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_counter::<NoLabelSet, _, u64>(&self.get(), None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// A gauge of whole numbers; clones share the same value.
#[derive(Clone, Debug, Default)]
pub struct ShardedGauge(Arc<[PaddedI64; SHARDS]>);

impl ShardedGauge {
    pub fn inc(&self) {
        self.0[shard()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dec(&self) {
        self.0[shard()].0.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.iter().map(|s| s.0.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for ShardedGauge {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for ShardedGauge {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.get())
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[repr(align(128))]
#[derive(Default, Debug)]
struct HistogramShard {
    counts: [AtomicU64; MAX_BUCKETS + 1],
    /// Sum of observations, as f64 bits; only this shard's thread writes it.
    sum: AtomicU64,
}

#[derive(Debug)]
struct HistogramInner {
    upper_bounds: Vec<f64>,
    shards: [HistogramShard; SHARDS],
}

/// A classic Prometheus histogram with fixed bucket bounds; clones share the same data.
#[derive(Clone, Debug)]
pub struct AtomicHistogram(Arc<HistogramInner>);

impl AtomicHistogram {
    /// At most 16 bounds; more are ignored.
    pub fn new(upper_bounds: impl IntoIterator<Item = f64>) -> Self {
        let upper_bounds: Vec<f64> = upper_bounds.into_iter().take(MAX_BUCKETS).collect();
        Self(Arc::new(HistogramInner { upper_bounds, shards: Default::default() }))
    }

    pub fn observe(&self, v: f64) {
        let i = self.0.upper_bounds.iter().position(|b| v <= *b).unwrap_or(self.0.upper_bounds.len());
        let s = &self.0.shards[shard()];
        s.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ =
            s.sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + v).to_bits()));
    }

    /// Per-bucket counts (the last for +Inf) and the sum.
    fn totals(&self) -> (Vec<u64>, f64) {
        let n = self.0.upper_bounds.len() + 1;
        let mut counts = vec![0u64; n];
        let mut sum = 0.0;
        for s in &self.0.shards {
            for (total, c) in counts.iter_mut().zip(&s.counts[..n]) {
                *total += c.load(Ordering::Relaxed);
            }
            sum += f64::from_bits(s.sum.load(Ordering::Relaxed));
        }
        (counts, sum)
    }

    /// Count and sum of the observations so far.
    pub fn snapshot(&self) -> (u64, f64) {
        let (counts, sum) = self.totals();
        (counts.iter().sum(), sum)
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (counts, sum) = self.totals();
        let bounds = self.0.upper_bounds.iter().copied().chain(std::iter::once(f64::INFINITY));
        let buckets: Vec<(f64, u64)> = bounds.zip(counts.iter().copied()).collect();
        encoder.encode_histogram::<NoLabelSet>(sum, counts.iter().sum(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_sum_and_count_across_threads() {
        // Dyadic values: their float sum is exact in whatever order the shards are added.
        let h = AtomicHistogram::new([0.125, 1.0]);
        let c = ShardedCounter::default();
        let g = ShardedGauge::default();
        std::thread::scope(|s| {
            for v in [0.0625, 0.125, 0.5, 7.0] {
                let (h, c, g) = (h.clone(), c.clone(), g.clone());
                s.spawn(move || {
                    h.observe(v);
                    c.inc_by(2);
                    g.inc();
                    g.inc();
                    g.dec();
                });
            }
        });
        assert_eq!(h.snapshot(), (4, 7.6875));
        assert_eq!((c.get(), g.get()), (8, 4));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("x", "x", h);
        registry.register("c", "c", c);
        registry.register("g", "g", g);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in
            ["x_bucket{le=\"0.125\"} 2\n", "x_bucket{le=\"1.0\"} 3\n", "x_bucket{le=\"+Inf\"} 4\n", "x_count 4\n"]
        {
            assert!(out.contains(line), "{line:?} missing in {out}");
        }
        assert!(out.contains("x_sum 7.6875\n") && out.contains("c_total 8\n") && out.contains("g 4\n"), "{out}");
    }
}
