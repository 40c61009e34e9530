//! Process-wide counters and histograms for `GET /metrics` that the actors and the
//! HTTP layer bump as they work (HTTP requests by route and status, execution start
//! latency, store commit latency and batch sizes). Gauges (queues, clients, counts by
//! status) are read from their owners when `/metrics` is asked.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use dashmap::DashMap;

/// A histogram with fixed upper bounds (Prometheus' cumulative buckets).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum of observations, in millionths of the unit.
    sum_millionths: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_millionths: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| value <= b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_millionths.fetch_add((value.max(0.0) * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The histogram in the text format.
    pub fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_millionths.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

const SECONDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0];
const SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

pub struct Metrics {
    /// Requests by route pattern and status.
    pub http_requests: DashMap<(String, u16), AtomicU64>,
    /// From an execution's creation to its process start, in seconds.
    pub start_latency: Histogram,
    /// One store commit (a batch of writes), in seconds.
    pub commit_latency: Histogram,
    /// Writes per store commit.
    pub batch_size: Histogram,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics {
        http_requests: DashMap::new(),
        start_latency: Histogram::new(SECONDS),
        commit_latency: Histogram::new(SECONDS),
        batch_size: Histogram::new(SIZES),
    })
}

impl Metrics {
    pub fn count_request(&self, route: &str, status: u16) {
        if let Some(counter) = self.http_requests.get(&(route.to_owned(), status)) {
            counter.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.http_requests.entry((route.to_owned(), status)).or_default().fetch_add(1, Ordering::Relaxed);
    }
}

/// A label value, escaped for the text format.
pub fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "test");
        assert!(out.contains("x_bucket{le=\"1\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"2\"} 3\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count 4\n") && out.contains("x_sum 12.7\n"), "{out}");
    }
}
