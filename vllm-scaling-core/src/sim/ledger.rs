//! What happened to each request, and the latency histograms vLLM would export.

use super::trace::TraceRequest;

/// vLLM's `time_to_first_token_seconds` bucket bounds (v1 engine).
pub(crate) const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
/// vLLM's `inter_token_latency_seconds` bucket bounds.
pub(crate) const ITL_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
/// vLLM's request-latency bucket bounds (`e2e_request_latency_seconds`, `request_queue_time_seconds`).
pub(crate) const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];

/// The four latency histograms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hist {
    Ttft = 0,
    QueueTime = 1,
    E2e = 2,
    Itl = 3,
}

impl Hist {
    pub(crate) fn bounds(self) -> &'static [f64] {
        match self {
            Self::Ttft => TTFT_BUCKETS,
            Self::Itl => ITL_BUCKETS,
            Self::QueueTime | Self::E2e => REQUEST_BUCKETS,
        }
    }
}

/// Per-second histogram counts (by the second an observation was made in, rounded up),
/// so a window query sums whole seconds the way `rate(..._bucket[w])` does.
#[derive(Clone, Debug, Default)]
pub(crate) struct Histograms {
    /// `counts[h][second]` holds one count per bucket plus the `+Inf` bucket.
    counts: [Vec<Vec<u32>>; 4],
}

impl Histograms {
    fn observe(&mut self, h: Hist, at_secs: f64, value_secs: f64, weight: u32) {
        let second = at_secs.ceil().max(0.0) as usize;
        let bounds = h.bounds();
        let series = &mut self.counts[h as usize];
        if series.len() <= second {
            series.resize_with(second + 1, Vec::new);
        }
        let row = &mut series[second];
        if row.is_empty() {
            row.resize(bounds.len() + 1, 0);
        }
        let bucket = bounds.partition_point(|&b| b < value_secs);
        row[bucket] = row[bucket].saturating_add(weight);
    }

    /// One observation, for tests of what reads the histograms.
    #[cfg(test)]
    pub(crate) fn observe_for_test(&mut self, h: Hist, at_secs: f64, value_secs: f64) {
        self.observe(h, at_secs, value_secs, 1);
    }

    /// `histogram_quantile(q, sum(rate(h_bucket[w])))` over the seconds in
    /// `(to - window, to]`: `None` when nothing was observed (Prometheus gives NaN).
    pub(crate) fn quantile(&self, h: Hist, q: f64, to_secs: f64, window_secs: f64) -> Option<f64> {
        let bounds = h.bounds();
        let series = &self.counts[h as usize];
        let hi = (to_secs.floor().max(0.0) as usize).min(series.len().saturating_sub(1));
        let lo = (to_secs - window_secs).floor().max(-1.0);
        let lo = if lo < 0.0 { 0 } else { lo as usize + 1 };
        if series.is_empty() || lo > hi {
            return None;
        }
        let mut total = vec![0u64; bounds.len() + 1];
        for row in &series[lo..=hi] {
            for (t, &c) in total.iter_mut().zip(row) {
                *t += u64::from(c);
            }
        }
        histogram_quantile(q, bounds, &total)
    }
}

/// Prometheus' `histogram_quantile` on non-cumulative bucket counts: linear
/// interpolation inside the bucket holding the rank; the `+Inf` bucket answers with the
/// highest finite bound.
pub(crate) fn histogram_quantile(q: f64, bounds: &[f64], counts: &[u64]) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut cumulative = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        let before = cumulative;
        cumulative += c;
        if cumulative as f64 >= rank && c > 0 {
            let Some(&upper) = bounds.get(i) else { return bounds.last().copied() };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(lower + (upper - lower) * (rank - before as f64) / c as f64);
        }
    }
    bounds.last().copied()
}

/// Every request's timeline in one run, and the histograms built from them.
#[derive(Clone, Debug)]
pub(crate) struct Ledger {
    /// When each request was admitted into a running batch (NaN: never).
    pub(crate) admitted: Vec<f64>,
    /// When each request's first token came out (NaN: never).
    pub(crate) first_token: Vec<f64>,
    /// When each request finished (NaN: never).
    pub(crate) finished: Vec<f64>,
    /// Requests that can never run (prompt and output exceed the KV cache).
    pub(crate) rejected: Vec<bool>,
    pub(crate) hist: Histograms,
}

impl Ledger {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            admitted: vec![f64::NAN; n],
            first_token: vec![f64::NAN; n],
            finished: vec![f64::NAN; n],
            rejected: vec![false; n],
            hist: Histograms::default(),
        }
    }

    pub(crate) fn on_admit(&mut self, id: usize, at: f64) {
        self.admitted[id] = at;
    }

    pub(crate) fn on_first_token(&mut self, id: usize, req: &TraceRequest, at: f64) {
        self.first_token[id] = at;
        self.hist.observe(Hist::Ttft, at, at - req.arrival_secs, 1);
    }

    pub(crate) fn on_finish(&mut self, id: usize, req: &TraceRequest, at: f64) {
        self.finished[id] = at;
        self.hist.observe(Hist::E2e, at, at - req.arrival_secs, 1);
        let queued = self.admitted[id] - req.arrival_secs;
        self.hist.observe(Hist::QueueTime, at, queued, 1);
        let tokens = req.output_tokens.max(1);
        if tokens > 1 {
            let itl = (at - self.first_token[id]) / f64::from(tokens - 1);
            self.hist.observe(Hist::Itl, at, itl, tokens - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_prometheus() {
        // 10 observations in (0.5, 0.75]: the median sits halfway through that bucket.
        let mut counts = vec![0u64; TTFT_BUCKETS.len() + 1];
        counts[10] = 10; // bucket (0.5, 0.75]
        let q = histogram_quantile(0.5, TTFT_BUCKETS, &counts).unwrap();
        assert!((q - 0.625).abs() < 1e-12, "{q}");
        // Everything in +Inf: the highest finite bound.
        let mut inf = vec![0u64; TTFT_BUCKETS.len() + 1];
        inf[TTFT_BUCKETS.len()] = 3;
        assert_eq!(histogram_quantile(0.99, TTFT_BUCKETS, &inf), Some(2560.0));
        assert_eq!(histogram_quantile(0.5, TTFT_BUCKETS, &vec![0; TTFT_BUCKETS.len() + 1]), None);
    }

    #[test]
    fn window_selects_whole_seconds() {
        let mut h = Histograms::default();
        h.observe(Hist::Ttft, 9.5, 0.05, 1); // second 10
        h.observe(Hist::Ttft, 20.0, 3.0, 1); // second 20
        assert!(h.quantile(Hist::Ttft, 0.5, 15.0, 10.0).unwrap() < 0.1);
        assert!(h.quantile(Hist::Ttft, 0.99, 20.0, 10.0).unwrap() > 2.5);
        assert_eq!(h.quantile(Hist::Ttft, 0.5, 30.0, 5.0), None);
        assert_eq!(h.quantile(Hist::E2e, 0.5, 30.0, 60.0), None);
    }
}
