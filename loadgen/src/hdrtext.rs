//! The histogram in HdrHistogram's percentile-distribution text format (sans-io), as
//! `outputPercentileDistribution` and wrk2 print it, so the standard plotting tools
//! (HdrHistogram's plotFiles.html, hdr-plot) read `--hdr-out` files directly.
//!
//! ```text
//!        Value     Percentile TotalCount 1/(1-Percentile)
//!
//!        0.045 0.000000000000          1           1.00
//!        ...
//! #[Mean    =        0.123, StdDeviation   =        0.045]
//! #[Max     =        1.234, Total count    =       100000]
//! #[Buckets =           27, SubBuckets     =         2048]
//! ```
//!
//! Values are recorded in microseconds and printed in milliseconds (scaling ratio 1000), with as
//! many decimals as the histogram has significant digits, like wrk2.

#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Percentile steps per halving of the distance to 100% (HdrHistogram's usual 5).
const TICKS_PER_HALF_DISTANCE: u32 = 5;
/// Recorded microseconds per printed unit (milliseconds).
const SCALE: f64 = 1000.0;

/// The percentile distribution of `h` in HdrHistogram's text format.
pub fn percentile_distribution(h: &Histogram<u64>) -> String {
    let digits = usize::from(h.sigfig());
    let mut out = String::new();
    let _ = write!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(TICKS_PER_HALF_DISTANCE) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / SCALE;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let inverse = 1.0 / (1.0 - q);
                let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10} {inverse:14.2}");
            } else {
                let _ = writeln!(out, "{value:12.digits$} {q:2.12} {total:10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / SCALE, h.stdev() / SCALE, h.max() as f64 / SCALE)
    };
    let sub_buckets = (2 * 10u64.pow(u32::from(h.sigfig()))).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Mean    = {mean:12.digits$}, StdDeviation   = {stdev:12.digits$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:12.digits$}, Total count    = {:12}]",
        h.len()
    );
    let _ = writeln!(
        out,
        "#[Buckets = {:12}, SubBuckets     = {sub_buckets:12}]",
        h.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::new_histogram;

    #[test]
    fn the_classic_layout() {
        let mut h = new_histogram();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let text = percentile_distribution(&h);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("       Value     Percentile TotalCount 1/(1-Percentile)")
        );
        assert_eq!(lines.next(), Some(""));
        assert_eq!(
            lines.next(),
            Some("       0.001 0.000000000000          1           1.00")
        );
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .skip(2)
            .collect();
        // Percentiles rise, counts rise to the total, and the last row is 100% without an
        // inverse column.
        let parsed: Vec<(f64, f64, u64)> = rows
            .iter()
            .map(|r| {
                let f: Vec<&str> = r.split_whitespace().collect();
                (
                    f[0].parse().unwrap(),
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                )
            })
            .collect();
        assert!(parsed
            .windows(2)
            .all(|w| w[0].1 <= w[1].1 && w[0].2 <= w[1].2));
        let last = rows.last().unwrap();
        assert_eq!(last.split_whitespace().count(), 3);
        assert_eq!(parsed.last().unwrap().2, 10_000);
        assert_eq!(parsed.last().unwrap().1, 1.0);
        assert!((parsed.last().unwrap().0 - 10.0).abs() < 0.01);
        // The median row reads 5 ms.
        let median = parsed.iter().find(|p| p.1 >= 0.5).unwrap();
        assert!((median.0 - 5.0).abs() < 0.01, "{median:?}");
        assert!(text.contains("Total count    =        10000]"), "{text}");
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn an_empty_histogram_has_header_and_footer_only() {
        let text = percentile_distribution(&new_histogram());
        assert_eq!(text.lines().count(), 5);
        assert!(text.contains("Total count    =            0"));
    }
}
