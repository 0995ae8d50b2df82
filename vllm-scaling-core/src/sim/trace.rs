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
    /// A column of `--columns` that the header does not have.
    #[error("line {line}: no column `{column}` for {role} (the header has: {found})")]
    MissingColumn {
        /// 1-based line of the header.
        line: usize,
        /// The column asked for.
        column: String,
        /// What it was to hold (`ts=`, `in=`, `out=`).
        role: &'static str,
        /// The header's columns, comma-separated.
        found: String,
    },
    /// A `--columns` mapping that cannot be read.
    #[error("bad column mapping `{spec}`: {reason}")]
    BadMapping {
        /// The mapping as given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
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

/// How a mapped trace's timestamps are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeFormat {
    /// Decided from the first row: ISO 8601 if it is not a number, else epoch
    /// milliseconds from 1e11, epoch seconds from 1e8, seconds below that.
    #[default]
    Auto,
    /// Seconds from any origin (the shared layout's `timestamp_seconds`).
    Seconds,
    /// Unix time, seconds.
    EpochSecs,
    /// Unix time, milliseconds.
    EpochMillis,
    /// ISO 8601 / RFC 3339 date-times (`2023-11-16T18:15:46.68Z`, or
    /// `2023-11-16 18:15:46.6805900` without an offset, read as UTC).
    Iso8601,
}

impl std::str::FromStr for TimeFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "auto" => Self::Auto,
            "seconds" => Self::Seconds,
            "epoch-s" | "epoch-secs" => Self::EpochSecs,
            "epoch-ms" | "epoch-millis" => Self::EpochMillis,
            "iso8601" | "iso" | "rfc3339" => Self::Iso8601,
            other => {
                return Err(format!(
                    "unknown time format `{other}`: expected auto, seconds, epoch-s, epoch-ms or iso8601"
                ));
            }
        })
    }
}

/// Which columns of a CSV hold the arrival time and the token counts
/// (`--columns ts=TIMESTAMP,in=ContextTokens,out=GeneratedTokens`), and how times are written.
///
/// ```
/// use vllm_scaling_core::sim::{ColumnMap, Trace, TraceOptions};
///
/// // The Azure dataset's own layout, wall-clock timestamps.
/// let csv = "TIMESTAMP,ContextTokens,GeneratedTokens\n\
///            2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9955900,396,109\n";
/// let columns: ColumnMap = "ts=TIMESTAMP,in=ContextTokens,out=GeneratedTokens".parse().unwrap();
/// let parsed = Trace::parse_csv_mapped(csv, TraceOptions::default(), &columns).unwrap();
/// // Unix times in f64 keep about a microsecond at this epoch.
/// assert!((parsed.trace.requests()[1].arrival_secs - 4.315).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    /// The arrival-time column.
    pub timestamp: String,
    /// The prompt-length column.
    pub input_tokens: String,
    /// The output-length column.
    pub output_tokens: String,
    /// How the times are written.
    pub time_format: TimeFormat,
}

impl std::str::FromStr for ColumnMap {
    type Err = TraceError;

    /// `ts=NAME,in=NAME,out=NAME` in any order (also `timestamp=`, `input=`, `output=`).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let bad = |reason: String| TraceError::BadMapping { spec: spec.to_owned(), reason };
        let (mut ts, mut input, mut output) = (None, None, None);
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, column)) = part.split_once('=') else {
                return Err(bad(format!("`{part}` is not KEY=COLUMN")));
            };
            let column = column.trim().to_owned();
            if column.is_empty() {
                return Err(bad(format!("`{part}` names no column")));
            }
            let slot = match key.trim() {
                "ts" | "timestamp" | "time" => &mut ts,
                "in" | "input" | "input_tokens" => &mut input,
                "out" | "output" | "output_tokens" => &mut output,
                other => return Err(bad(format!("unknown key `{other}`: expected ts=, in= and out="))),
            };
            if slot.replace(column).is_some() {
                return Err(bad(format!("`{}` is given twice", key.trim())));
            }
        }
        match (ts, input, output) {
            (Some(timestamp), Some(input_tokens), Some(output_tokens)) => {
                Ok(Self { timestamp, input_tokens, output_tokens, time_format: TimeFormat::Auto })
            }
            _ => Err(bad("needs all of ts=, in= and out=".to_owned())),
        }
    }
}

/// Splits a CSV line, honouring double quotes (`"a,b"` is one field; `""` is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field).trim().to_owned()),
            c => field.push(c),
        }
    }
    fields.push(field.trim().to_owned());
    fields
}

/// Seconds of a timestamp in `format` (not `Auto`).
fn parse_time(raw: &str, format: TimeFormat) -> Result<f64, String> {
    let number = || raw.parse::<f64>().map_err(|_| format!("timestamp `{raw}` is not a number"));
    let secs = match format {
        TimeFormat::Auto | TimeFormat::Seconds | TimeFormat::EpochSecs => number()?,
        TimeFormat::EpochMillis => number()? / 1000.0,
        TimeFormat::Iso8601 => {
            let ts = raw.parse::<jiff::Timestamp>().or_else(|_| {
                raw.parse::<jiff::civil::DateTime>()
                    .map_err(|e| format!("timestamp `{raw}` is not an ISO 8601 date-time: {e}"))
                    .and_then(|dt| {
                        dt.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).map_err(|e| e.to_string())
                    })
            })?;
            ts.as_nanosecond() as f64 / 1e9
        }
    };
    if secs.is_finite() { Ok(secs) } else { Err(format!("timestamp `{raw}` is not finite")) }
}

/// The format the first timestamp is written in (see [`TimeFormat::Auto`]).
fn detect_time_format(raw: &str) -> TimeFormat {
    match raw.parse::<f64>() {
        Ok(v) if v.abs() >= 1e11 => TimeFormat::EpochMillis,
        Ok(v) if v.abs() >= 1e8 => TimeFormat::EpochSecs,
        Ok(_) => TimeFormat::Seconds,
        Err(_) => TimeFormat::Iso8601,
    }
}

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

    /// Parses a CSV with its own header, taking the columns `columns` names (others are
    /// ignored; double-quoted fields are read). Times are converted to seconds and
    /// shifted so the earliest request arrives at 0 (`seconds` times are kept as they
    /// are); rows are sorted by time, since raw dumps are often not.
    ///
    /// # Errors
    /// [`TraceError::MissingColumn`] for a column the header lacks, the first bad row
    /// naming its line and column (unless [`TraceOptions::skip_bad_rows`]), an empty trace.
    pub fn parse_csv_mapped(text: &str, options: TraceOptions, columns: &ColumnMap) -> Result<ParsedTrace, TraceError> {
        let mut lines = text.lines().enumerate();
        let (header_line, header) = loop {
            match lines.next() {
                Some((_, l)) if l.trim().is_empty() => continue,
                Some((i, l)) => break (i + 1, split_csv(l.trim().trim_start_matches('\u{feff}'))),
                None => return Err(TraceError::Empty),
            }
        };
        let find = |column: &str, role: &'static str| {
            header.iter().position(|h| h == column).ok_or_else(|| TraceError::MissingColumn {
                line: header_line,
                column: column.to_owned(),
                role,
                found: header.join(", "),
            })
        };
        let ts_col = find(&columns.timestamp, "ts=")?;
        let in_col = find(&columns.input_tokens, "in=")?;
        let out_col = find(&columns.output_tokens, "out=")?;
        let width = ts_col.max(in_col).max(out_col) + 1;
        let mut format = columns.time_format;
        let mut requests = Vec::new();
        let mut skipped_rows = 0;
        let mut first_skipped = None;
        for (i, raw) in lines {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let fields = split_csv(raw.trim());
            let bad = |reason: String| TraceError::BadRow { line, reason };
            let row = (|| {
                if fields.len() < width {
                    return Err(bad(format!(
                        "expected at least {width} comma-separated fields, found {}",
                        fields.len()
                    )));
                }
                let t = &fields[ts_col];
                if format == TimeFormat::Auto {
                    format = detect_time_format(t);
                }
                let arrival_secs =
                    parse_time(t, format).map_err(|e| bad(format!("column `{}`: {e}", columns.timestamp)))?;
                let tokens = |column: &str, s: &str| -> Result<u32, TraceError> {
                    if s.starts_with('-') {
                        return Err(bad(format!("column `{column}` must not be negative, got `{s}`")));
                    }
                    s.parse::<u32>()
                        .or_else(|_| match s.parse::<f64>() {
                            // `12.0` from a dataframe dump is a whole number of tokens.
                            Ok(v) if v.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&v) => Ok(v as u32),
                            _ => Err(()),
                        })
                        .map_err(|()| bad(format!("column `{column}`: `{s}` is not a whole number of tokens")))
                };
                let input_tokens = tokens(&columns.input_tokens, &fields[in_col])?;
                if input_tokens == 0 {
                    return Err(bad(format!("column `{}` must be at least 1", columns.input_tokens)));
                }
                let output_tokens = tokens(&columns.output_tokens, &fields[out_col])?;
                Ok(TraceRequest { arrival_secs, input_tokens, output_tokens })
            })();
            match row {
                Ok(r) => requests.push(r),
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
        requests.sort_by(|a, b| a.arrival_secs.total_cmp(&b.arrival_secs));
        let origin =
            if format == TimeFormat::Seconds { 0.0f64.min(requests[0].arrival_secs) } else { requests[0].arrival_secs };
        for r in &mut requests {
            r.arrival_secs -= origin;
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
#[serde(rename_all = "camelCase")]
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
    fn mapped_columns_read_every_timestamp_form() {
        let columns =
            |fmt: TimeFormat| ColumnMap { time_format: fmt, .."ts=t,in=p,out=o".parse::<ColumnMap>().unwrap() };
        // The same three arrivals (0, 1.5 and 4.25 s after the first), in each form, with
        // the columns in another order, an extra column and a quoted field.
        let cases = [
            ("seconds", "10.0", "11.5", "14.25", TimeFormat::Seconds),
            ("epoch seconds", "1700150146", "1700150147.5", "1700150150.25", TimeFormat::EpochSecs),
            ("epoch ms", "1700150146000", "1700150147500", "1700150150250", TimeFormat::EpochMillis),
            (
                "ISO, Z",
                "2023-11-16T18:15:46Z",
                "2023-11-16T18:15:47.5Z",
                "2023-11-16T18:15:50.25Z",
                TimeFormat::Iso8601,
            ),
            (
                "ISO, offset",
                "2023-11-16T19:15:46+01:00",
                "2023-11-16T18:15:47.500Z",
                "2023-11-16T19:15:50.25+01:00",
                TimeFormat::Iso8601,
            ),
            (
                "ISO, space, 7 digits",
                "2023-11-16 18:15:46.0000000",
                "2023-11-16 18:15:47.5000000",
                "2023-11-16 18:15:50.2500000",
                TimeFormat::Iso8601,
            ),
        ];
        for (what, a, b, c, fmt) in cases {
            // Rows out of order: a raw dump is sorted on the way in.
            let csv = format!("o,extra,t,p\n7,\"x,y\",{c},30\n5,z,{a},10\n0,z,{b},20\n");
            for f in [fmt, TimeFormat::Auto] {
                let p = Trace::parse_csv_mapped(&csv, TraceOptions::default(), &columns(f))
                    .unwrap_or_else(|e| panic!("{what} ({f:?}): {e}"));
                let got: Vec<(f64, u32, u32)> =
                    p.trace.requests().iter().map(|r| (r.arrival_secs, r.input_tokens, r.output_tokens)).collect();
                let base = if fmt == TimeFormat::Seconds { 10.0 } else { 0.0 };
                let want = [(base, 10, 5), (base + 1.5, 20, 0), (base + 4.25, 30, 7)];
                for (g, w) in got.iter().zip(want) {
                    assert!((g.0 - w.0).abs() < 1e-6 && g.1 == w.1 && g.2 == w.2, "{what} ({f:?}): {got:?}");
                }
            }
        }
    }

    #[test]
    fn unmappable_columns_and_rows_say_which() {
        let m: ColumnMap = "ts=TIMESTAMP,in=ContextTokens,out=GeneratedTokens".parse().unwrap();
        let e = Trace::parse_csv_mapped("TIMESTAMP,Context,GeneratedTokens\n0,1,1\n", TraceOptions::default(), &m)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "line 1: no column `ContextTokens` for in= (the header has: TIMESTAMP, Context, GeneratedTokens)"
        );
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,1,1\nyesterday,1,1\n";
        let e = Trace::parse_csv_mapped(text, TraceOptions::default(), &m).unwrap_err().to_string();
        assert!(e.starts_with("line 3: column `TIMESTAMP`: timestamp `yesterday`"), "{e}");
        let text = "TIMESTAMP,ContextTokens,GeneratedTokens\n0,many,1\n";
        let e = Trace::parse_csv_mapped(text, TraceOptions::default(), &m).unwrap_err().to_string();
        assert!(e.contains("line 2: column `ContextTokens`: `many`"), "{e}");
        let p = Trace::parse_csv_mapped(&format!("{text}1,3,4\n"), TraceOptions { skip_bad_rows: true }, &m).unwrap();
        assert_eq!((p.trace.len(), p.skipped_rows), (1, 1));
        for (spec, needle) in [
            ("ts=a,in=b", "needs all of"),
            ("ts=a,in=b,out=c,in=d", "given twice"),
            ("ts=a,input=b,output=c,foo=d", "unknown key `foo`"),
            ("ts=a,in,out=c", "not KEY=COLUMN"),
        ] {
            let e = spec.parse::<ColumnMap>().unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains(spec), "{spec}: {e}");
        }
        assert!("fortnightly".parse::<TimeFormat>().unwrap_err().contains("epoch-ms"));
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
