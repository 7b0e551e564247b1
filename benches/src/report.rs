//! Shared report formatting.

use hdrhistogram::Histogram;

/// `p50 … p90 … p99 … p99.9 … max …` of a histogram recorded in µs, in milliseconds.
pub fn percentiles_ms(h: &Histogram<u64>) -> String {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}
