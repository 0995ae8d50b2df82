//! Request traces: the CSV layout of `../shared/traces` (`timestamp_seconds,input_tokens,
//! output_tokens`), parsing with line-numbered errors, and the rate multiplier and time
//! compression applied before a run.

use super::rng::SimRng;

/// One request of a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TraceRequest {
    /// Arrival time, seconds after the start of the trace.
    pub arrival_secs: f64,
    /// Prompt length in tokens (at least 1).
    pub input_tokens: u32,
    /// Generated length in tokens. The simulator always produces at least one token (the
    /// first token comes out of the prefill), so 0 is run as 1.
    pub output_tokens: u32,
}

/// A sorted list of requests.
///
/// ```
/// use vllm_scaling_core::sim::{Trace, TraceOptions};
///
/// let csv = "timestamp_seconds,input_tokens,output_tokens\n0.0,100,20\n0.5,200,10\n";
/// let parsed = Trace::parse_csv(csv, TraceOptions::default()).unwrap();
/// assert_eq!(parsed.trace.len(), 2);
/// // Each request three times, jittered by up to ±0.5 s, seeded.
/// let tripled = parsed.trace.replicate(3.0, 0.5, 1).unwrap();
/// assert_eq!(tripled.len(), 6);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Trace {
    requests: Vec<TraceRequest>,
}

/// How a trace file is read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceOptions {
    /// Skip malformed rows (bad fields, negative or zero-length prompts, times that go
    /// backwards) and count them, instead of failing on the first one.
    pub skip_bad_rows: bool,
}

/// A parsed trace and how many rows were skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedTrace {
    /// The requests.
    pub trace: Trace,
    /// Rows skipped under [`TraceOptions::skip_bad_rows`] (0 otherwise).
    pub skipped_rows: usize,
    /// The first skipped row's error, to show the user what was wrong.
    pub first_skipped: Option<TraceError>,
}

/// Why a trace was rejected.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// The header line is not `timestamp_seconds,input_tokens,output_tokens`.
    #[error("line 1: expected the header `timestamp_seconds,input_tokens,output_tokens`, found `{found}`")]
    Header {
        /// What the first line held.
        found: String,
    },
    /// A row that cannot be read.
    #[error("line {line}: {reason}")]
    BadRow {
        /// 1-based line number in the file.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A row earlier than the one before it.
    #[error(
        "line {line}: timestamp {time} is earlier than the previous row's {previous}; traces must be sorted by time"
    )]
    Unsorted {
        /// 1-based line number.
        line: usize,
        /// This row's time.
        time: f64,
        /// The previous row's time.
        previous: f64,
    },
    /// No requests at all.
    #[error("the trace holds no requests")]
    Empty,
    /// A rate multiplier, jitter or compression factor that cannot be applied.
    #[error("{what} must be {expected}, got {value}")]
    BadTransform {
        /// The parameter.
        what: &'static str,
        /// The accepted range.
        expected: &'static str,
        /// The value given.
        value: f64,
    },
}

const HEADER: [&str; 3] = ["timestamp_seconds", "input_tokens", "output_tokens"];

impl Trace {
    /// A trace from requests, sorted by arrival time (stable, so equal times keep their order).
    ///
    /// # Errors
    /// [`TraceError::BadRow`] (line 0) for a request with a negative or non-finite time or
    /// a zero-length prompt, [`TraceError::Empty`] for no requests.
    pub fn from_requests(mut requests: Vec<TraceRequest>) -> Result<Self, TraceError> {
        if requests.is_empty() {
            return Err(TraceError::Empty);
        }
        for (i, r) in requests.iter().enumerate() {
            if !r.arrival_secs.is_finite() || r.arrival_secs < 0.0 {
                return Err(TraceError::BadRow {
                    line: 0,
                    reason: format!("request {i}: arrival {} is not a time", r.arrival_secs),
                });
            }
            if r.input_tokens == 0 {
                return Err(TraceError::BadRow {
                    line: 0,
                    reason: format!("request {i}: input_tokens must be at least 1"),
                });
            }
        }
        requests.sort_by(|a, b| a.arrival_secs.total_cmp(&b.arrival_secs));
        Ok(Self { requests })
    }

    /// Parses the CSV layout of `../shared/traces`: a header line, then
    /// `timestamp_seconds,input_tokens,output_tokens` rows sorted by time. Blank lines
    /// are ignored; anything else wrong is an error naming the line.
    ///
    /// # Errors
    /// The first bad line (unless [`TraceOptions::skip_bad_rows`]), or an empty trace.
    pub fn parse_csv(text: &str, options: TraceOptions) -> Result<ParsedTrace, TraceError> {
        let mut lines = text.lines().enumerate();
        let header = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((_, l)) => break l.trim().trim_start_matches('\u{feff}'),
                None => return Err(TraceError::Empty),
            }
        };
        let fields: Vec<&str> = header.split(',').map(str::trim).collect();
        if fields != HEADER {
            return Err(TraceError::Header { found: header.chars().take(120).collect() });
        }
        let mut requests = Vec::new();
        let mut skipped_rows = 0;
        let mut first_skipped = None;
        let mut previous = 0.0f64;
        for (i, raw) in lines {
            let line = i + 1;
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let row = parse_row(raw, line).and_then(|r| {
                if r.arrival_secs < previous {
                    Err(TraceError::Unsorted { line, time: r.arrival_secs, previous })
                } else {
                    Ok(r)
                }
            });
            match row {
                Ok(r) => {
                    previous = r.arrival_secs;
                    requests.push(r);
                }
                Err(e) if options.skip_bad_rows => {
                    skipped_rows += 1;
                    first_skipped.get_or_insert(e);
                }
                Err(e) => return Err(e),
            }
        }
        if requests.is_empty() {
            return Err(TraceError::Empty);
        }
        Ok(ParsedTrace { trace: Self { requests }, skipped_rows, first_skipped })
    }

    /// The requests, sorted by arrival.
    #[must_use]
    pub fn requests(&self) -> &[TraceRequest] {
        &self.requests
    }

    /// How many requests.
    #[must_use]
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether there are none (never true for a parsed trace).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// The last arrival time, seconds.
    #[must_use]
    pub fn duration_secs(&self) -> f64 {
        self.requests.last().map_or(0.0, |r| r.arrival_secs)
    }

    /// The trace with every request replayed `rate_scale` times (a fractional part is
    /// one more copy with that probability), each copy moved by a uniform jitter in
    /// `[-jitter_secs, +jitter_secs]` (clamped at 0), seeded. The first copy of each
    /// request is jittered too, so the shape of bursts is kept but no two copies coincide.
    /// `rate_scale` 1 with jitter 0 returns the trace unchanged.
    ///
    /// # Errors
    /// [`TraceError::BadTransform`] for a rate scale that is not a positive finite number
    /// or a negative jitter.
    pub fn replicate(&self, rate_scale: f64, jitter_secs: f64, seed: u64) -> Result<Self, TraceError> {
        if !(rate_scale.is_finite() && rate_scale > 0.0 && rate_scale <= 10_000.0) {
            return Err(TraceError::BadTransform {
                what: "the rate scale",
                expected: "in (0, 10000]",
                value: rate_scale,
            });
        }
        if !(jitter_secs.is_finite() && jitter_secs >= 0.0) {
            return Err(TraceError::BadTransform {
                what: "the jitter",
                expected: "a finite number of seconds >= 0",
                value: jitter_secs,
            });
        }
        if rate_scale == 1.0 && jitter_secs == 0.0 {
            return Ok(self.clone());
        }
        let mut rng = SimRng::stream(seed, 0x7261_7465);
        let whole = rate_scale.floor() as usize;
        let frac = rate_scale - rate_scale.floor();
        let mut out = Vec::with_capacity(self.requests.len() * (whole + 1));
        for r in &self.requests {
            let copies = whole + usize::from(frac > 0.0 && rng.uniform() < frac);
            for _ in 0..copies {
                let shift = if jitter_secs > 0.0 { (rng.uniform() * 2.0 - 1.0) * jitter_secs } else { 0.0 };
                out.push(TraceRequest { arrival_secs: (r.arrival_secs + shift).max(0.0), ..*r });
            }
        }
        if out.is_empty() {
            return Err(TraceError::Empty);
        }
        out.sort_by(|a, b| a.arrival_secs.total_cmp(&b.arrival_secs));
        Ok(Self { requests: out })
    }

    /// The trace played `factor` times faster (arrival times divided by `factor`).
    ///
    /// # Errors
    /// [`TraceError::BadTransform`] for a factor that is not a positive finite number.
    pub fn compress(&self, factor: f64) -> Result<Self, TraceError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TraceError::BadTransform {
                what: "the time compression",
                expected: "a positive number",
                value: factor,
            });
        }
        Ok(Self {
            requests: self
                .requests
                .iter()
                .map(|r| TraceRequest { arrival_secs: r.arrival_secs / factor, ..*r })
                .collect(),
        })
    }

    /// The requests arriving in `[from_secs, to_secs)`, shifted to start at 0.
    #[must_use]
    pub fn window(&self, from_secs: f64, to_secs: f64) -> Vec<TraceRequest> {
        let start = self.requests.partition_point(|r| r.arrival_secs < from_secs);
        let end = self.requests.partition_point(|r| r.arrival_secs < to_secs);
        self.requests[start..end]
            .iter()
            .map(|r| TraceRequest { arrival_secs: r.arrival_secs - from_secs, ..*r })
            .collect()
    }

    /// Summary statistics (request count, span, mean rate, peak per-minute rate, mean
    /// token lengths).
    #[must_use]
    pub fn stats(&self) -> TraceStats {
        let n = self.requests.len();
        let duration = self.duration_secs();
        let minutes = (duration / 60.0).floor() as usize + 1;
        let mut per_minute = vec![0usize; minutes];
        let (mut input, mut output) = (0u64, 0u64);
        for r in &self.requests {
            per_minute[((r.arrival_secs / 60.0) as usize).min(minutes - 1)] += 1;
            input += u64::from(r.input_tokens);
            output += u64::from(r.output_tokens);
        }
        let peak = per_minute.iter().copied().max().unwrap_or(0);
        let denom = n.max(1) as f64;
        TraceStats {
            requests: n,
            duration_secs: duration,
            mean_rps: if duration > 0.0 { n as f64 / duration } else { 0.0 },
            peak_minute_rps: peak as f64 / 60.0,
            mean_input_tokens: input as f64 / denom,
            mean_output_tokens: output as f64 / denom,
        }
    }
}

/// What [`Trace::stats`] reports.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TraceStats {
    /// Number of requests.
    pub requests: usize,
    /// Last arrival, seconds.
    pub duration_secs: f64,
    /// Requests per second over the span.
    pub mean_rps: f64,
    /// The busiest minute's requests per second.
    pub peak_minute_rps: f64,
    /// Mean prompt length.
    pub mean_input_tokens: f64,
    /// Mean generated length.
    pub mean_output_tokens: f64,
}

fn parse_row(raw: &str, line: usize) -> Result<TraceRequest, TraceError> {
    let bad = |reason: String| TraceError::BadRow { line, reason };
    let mut fields = raw.split(',').map(str::trim);
    let (Some(t), Some(i), Some(o), None) = (fields.next(), fields.next(), fields.next(), fields.next()) else {
        return Err(bad(format!("expected 3 comma-separated fields, found {}", raw.split(',').count())));
    };
    let arrival_secs: f64 = t.parse().map_err(|_| bad(format!("timestamp_seconds `{t}` is not a number")))?;
    if !arrival_secs.is_finite() || arrival_secs < 0.0 {
        return Err(bad(format!("timestamp_seconds must be a finite number >= 0, got `{t}`")));
    }
    let tokens = |name: &str, s: &str| -> Result<u32, TraceError> {
        if s.starts_with('-') {
            return Err(bad(format!("{name} must not be negative, got `{s}`")));
        }
        s.parse::<u32>().map_err(|_| bad(format!("{name} `{s}` is not a whole number of tokens")))
    };
    let input_tokens = tokens("input_tokens", i)?;
    if input_tokens == 0 {
        return Err(bad("input_tokens must be at least 1".to_owned()));
    }
    let output_tokens = tokens("output_tokens", o)?;
    Ok(TraceRequest { arrival_secs, input_tokens, output_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "timestamp_seconds,input_tokens,output_tokens\n0.000,10,5\n0.5,20,0\n\n2.25,30,7\n";

    #[test]
    fn parses_the_shared_layout() {
        let p = Trace::parse_csv(GOOD, TraceOptions::default()).unwrap();
        assert_eq!(p.trace.len(), 3);
        assert_eq!(p.trace.requests()[2], TraceRequest { arrival_secs: 2.25, input_tokens: 30, output_tokens: 7 });
        assert_eq!(p.skipped_rows, 0);
        assert_eq!(p.trace.duration_secs(), 2.25);
    }

    #[test]
    fn bad_rows_name_their_line() {
        let cases = [
            ("timestamp_seconds,input_tokens,output_tokens\n0,1,1\n1,x,2\n", 3, "not a whole number"),
            ("timestamp_seconds,input_tokens,output_tokens\n0,1,1\n1,-4,2\n", 3, "negative"),
            ("timestamp_seconds,input_tokens,output_tokens\n0,1,-1\n", 2, "negative"),
            ("timestamp_seconds,input_tokens,output_tokens\n0,0,1\n", 2, "at least 1"),
            ("timestamp_seconds,input_tokens,output_tokens\n0,1\n", 2, "3 comma-separated"),
            ("timestamp_seconds,input_tokens,output_tokens\nnan,1,1\n", 2, "finite"),
            ("timestamp_seconds,input_tokens,output_tokens\n-1,1,1\n", 2, "finite"),
        ];
        for (text, line, needle) in cases {
            let e = Trace::parse_csv(text, TraceOptions::default()).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with(&format!("line {line}:")), "{msg}");
            assert!(msg.contains(needle), "{msg}");
        }
    }

    #[test]
    fn unsorted_rows_are_an_error_or_skipped() {
        let text = "timestamp_seconds,input_tokens,output_tokens\n0,1,1\n5,1,1\n3,1,1\n6,1,1\n";
        let e = Trace::parse_csv(text, TraceOptions::default()).unwrap_err();
        assert_eq!(e, TraceError::Unsorted { line: 4, time: 3.0, previous: 5.0 });
        let p = Trace::parse_csv(text, TraceOptions { skip_bad_rows: true }).unwrap();
        assert_eq!(p.trace.len(), 3);
        assert_eq!(p.skipped_rows, 1);
        assert!(matches!(p.first_skipped, Some(TraceError::Unsorted { line: 4, .. })));
    }

    #[test]
    fn header_and_empty() {
        assert!(matches!(Trace::parse_csv("a,b,c\n0,1,1\n", TraceOptions::default()), Err(TraceError::Header { .. })));
        assert_eq!(Trace::parse_csv("", TraceOptions::default()), Err(TraceError::Empty));
        let only_bad = "timestamp_seconds,input_tokens,output_tokens\nx,1,1\n";
        assert_eq!(Trace::parse_csv(only_bad, TraceOptions { skip_bad_rows: true }), Err(TraceError::Empty));
    }

    #[test]
    fn replicate_scales_the_count_and_keeps_order() {
        let t = Trace::parse_csv(GOOD, TraceOptions::default()).unwrap().trace;
        let r = t.replicate(30.0, 0.5, 9).unwrap();
        assert_eq!(r.len(), 90);
        assert!(r.requests().windows(2).all(|w| w[0].arrival_secs <= w[1].arrival_secs));
        assert_eq!(r, t.replicate(30.0, 0.5, 9).unwrap(), "seeded");
        assert_ne!(r, t.replicate(30.0, 0.5, 10).unwrap());
        let frac = t.replicate(2.5, 0.0, 1).unwrap();
        assert!((6..=9).contains(&frac.len()));
        assert!(t.replicate(0.0, 0.0, 1).is_err());
        assert!(t.replicate(f64::NAN, 0.0, 1).is_err());
        assert!(t.replicate(1.0, -1.0, 1).is_err());
        assert_eq!(t.replicate(1.0, 0.0, 1).unwrap(), t);
    }

    #[test]
    fn compress_and_window() {
        let t = Trace::parse_csv(GOOD, TraceOptions::default()).unwrap().trace;
        let c = t.compress(2.0).unwrap();
        assert_eq!(c.duration_secs(), 1.125);
        assert!(t.compress(0.0).is_err());
        let w = t.window(0.4, 3.0);
        assert_eq!(w.len(), 2);
        assert!((w[0].arrival_secs - 0.1).abs() < 1e-12);
    }
}
