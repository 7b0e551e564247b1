//! Shared report formatting.

use hdrhistogram::Histogram;

/// `p50 … p90 … p99 … p99.9 … max …` of a histogram recorded in µs, in milliseconds.
pub fn percentiles_ms(h: &Histogram<u64>) -> String {
    let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.90)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max())
    )
}

/// The percentile spectrum of a histogram recorded in µs as an SVG plot: latency (ms, linear)
/// against percentile on the usual log scale (50%, 90%, 99%, 99.9%, … evenly spaced), so the
/// tail is as visible as the median.
pub fn svg_percentiles(h: &Histogram<u64>, title: &str) -> String {
    let (w, hgt, left, right, top, bottom) = (720.0, 400.0, 70.0, 20.0, 40.0, 50.0);
    let plot_w = w - left - right;
    let plot_h = hgt - top - bottom;
    // x = log10(1 / (1 - q)): 0 at the median's left edge (q = 0), 1 at 90 %, 2 at 99 %, …
    let nines = 5.0;
    let xq = |q: f64| left + plot_w * ((1.0 / (1.0 - q).max(1e-9)).log10() / nines).min(1.0);
    let max_ms = (h.max() as f64 / 1000.0).max(0.001);
    let y = |ms: f64| top + plot_h * (1.0 - ms / max_ms);
    let mut points = Vec::new();
    let steps = 400;
    for i in 0..=steps {
        let q = 1.0 - 10f64.powf(-nines * i as f64 / steps as f64);
        let ms = h.value_at_quantile(q) as f64 / 1000.0;
        points.push(format!("{:.1},{:.1}", xq(q), y(ms)));
    }
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{hgt}" viewBox="0 0 {w} {hgt}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="#fff"/>
<text x="{left}" y="22" font-size="14">{}</text>
"##,
        escape(title)
    );
    for (label, q) in [
        ("0%", 0.0),
        ("90%", 0.9),
        ("99%", 0.99),
        ("99.9%", 0.999),
        ("99.99%", 0.9999),
        ("99.999%", 0.99999),
    ] {
        let x = xq(q);
        svg.push_str(&format!(
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>
"##,
            top + plot_h,
            top + plot_h + 18.0
        ));
    }
    for i in 0..=4 {
        let ms = max_ms * i as f64 / 4.0;
        let yy = y(ms);
        svg.push_str(&format!(
            r##"<line x1="{left}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{ms:.2}</text>
"##,
            left + plot_w,
            left - 6.0,
            yy + 4.0
        ));
    }
    svg.push_str(&format!(
        r##"<text x="14" y="{:.1}" transform="rotate(-90 14 {:.1})" text-anchor="middle">latency (ms)</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile ({} samples)</text>
<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{}"/>
</svg>
"##,
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        left + plot_w / 2.0,
        hgt - 8.0,
        h.len(),
        points.join(" ")
    ));
    svg
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A progress line on stderr for a run (only when stderr is a terminal, so logs stay clean):
/// warm-up, then the measured seconds, redrawn every second.
pub async fn progress(
    label: String,
    start: std::time::Instant,
    measure_from: std::time::Instant,
    end: std::time::Instant,
) {
    use std::io::{IsTerminal, Write};
    if !std::io::stderr().is_terminal() {
        return;
    }
    let total = end
        .saturating_duration_since(measure_from)
        .as_secs_f64()
        .max(0.001);
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let now = std::time::Instant::now();
        let line = if now < measure_from {
            format!(
                "{label}: warming up {:.0}/{:.0} s",
                now.saturating_duration_since(start).as_secs_f64(),
                measure_from.saturating_duration_since(start).as_secs_f64()
            )
        } else {
            let done = now
                .saturating_duration_since(measure_from)
                .as_secs_f64()
                .min(total);
            let width = 30;
            let filled = ((done / total) * width as f64) as usize;
            format!(
                "{label}: [{}{}] {done:.0}/{total:.0} s",
                "#".repeat(filled),
                " ".repeat(width - filled.min(width))
            )
        };
        let mut err = std::io::stderr();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

/// Clears the progress line (when stderr is a terminal).
pub fn progress_done() {
    use std::io::{IsTerminal, Write};
    if std::io::stderr().is_terminal() {
        let _ = write!(std::io::stderr(), "\r\x1b[2K");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_svg_with_the_tail_on_it() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let svg = svg_percentiles(&h, "a <test> run");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt; run"));
        assert!(svg.contains("99.9%") && svg.contains("10000 samples"));
        let points = svg
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        assert_eq!(points.split(' ').count(), 401);
    }
}
