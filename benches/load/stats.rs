//! Latency percentiles and the numbers a report prints.

/// Latencies in microseconds, sorted.
#[derive(Debug, Default)]
pub struct Latencies(Vec<u32>);

impl Latencies {
    pub fn new(mut samples: Vec<u32>) -> Self {
        samples.sort_unstable();
        Self(samples)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The `p` quantile (0..=1), in milliseconds.
    pub fn ms(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let at = ((self.0.len() - 1) as f64 * p).round() as usize;
        f64::from(self.0[at]) / 1000.0
    }

    /// `p50/p99/p99.9/max` in milliseconds.
    pub fn summary(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            fmt_ms(self.ms(0.5)),
            fmt_ms(self.ms(0.99)),
            fmt_ms(self.ms(0.999)),
            fmt_ms(self.ms(1.0))
        )
    }
}

/// A duration in milliseconds with the digits that matter.
pub fn fmt_ms(ms: f64) -> String {
    if ms.is_nan() {
        "-".into()
    } else if ms < 10.0 {
        format!("{ms:.2}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// Bytes as MiB.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}
