//! The checks behind the `exposition_parse` fuzz target, public so that `cargo test`
//! replays the committed corpus through exactly the same code.

use vllm_scaling_core::{Metric, Timestamp};

use crate::exposition::{parse, render_sample};
use crate::snapshot::{PodSnapshot, SeriesFilter, fleet_quantile, histogram_quantile};

/// Parses `data` (when it is UTF-8) and checks what must hold for any input:
/// - a rejected page names a line that exists;
/// - an accepted page, re-rendered sample by sample, parses back to the same samples
///   (names, labels, value bits, timestamps);
/// - reading catalog values, rates and quantiles from it never panics.
///
/// # Panics
/// When one of those properties fails (that is the point).
pub fn exposition_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let exposition = match parse(text) {
        Ok(e) => e,
        Err(e) => {
            let lines = text.split('\n').count();
            assert!(e.line >= 1 && e.line <= lines, "error on line {} of {lines}: {e}", e.line);
            assert!(e.column >= 1, "{e}");
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let mut rendered = String::new();
    for s in exposition.samples() {
        render_sample(&mut rendered, s.name, s.labels, s.value, s.timestamp);
    }
    let again = parse(&rendered).unwrap_or_else(|e| panic!("a re-rendered page does not parse: {e}\n{rendered}"));
    assert_eq!(again.len(), exposition.len());
    for (a, b) in exposition.samples().zip(again.samples()) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.labels, b.labels);
        assert!(a.value.to_bits() == b.value.to_bits() || (a.value.is_nan() && b.value.is_nan()), "{a:?} vs {b:?}");
        assert_eq!(a.timestamp.map(f64::to_bits), b.timestamp.map(f64::to_bits), "timestamps differ: {a:?} vs {b:?}");
    }
    let snap = PodSnapshot::from_exposition(&exposition, &SeriesFilter::default(), Timestamp::from_secs(10));
    let earlier = PodSnapshot::from_exposition(&again, &SeriesFilter::default(), Timestamp::ZERO);
    for metric in Metric::ALL {
        let _ = snap.instant(metric);
        let _ = snap.rate(&earlier, metric);
        if let Ok(h) = snap.histogram(metric) {
            let _ = histogram_quantile(0.95, &h.buckets);
            let _ = fleet_quantile(0.5, [h]);
            if let Ok(delta) = snap.histogram_delta(&earlier, metric) {
                assert!(delta.buckets.len() <= h.buckets.len());
            }
        }
    }
}
