//! A strict, zero-copy parser for the Prometheus text exposition format (0.0.4) and the
//! parts of OpenMetrics 1.0 text that exporters emit.
//!
//! What it accepts: `# HELP`, `# TYPE` and `# UNIT` lines, other `#` comments (ignored),
//! blank lines, `\r\n` line ends, label values with `\\`, `\"` and `\n` escapes, a trailing
//! comma in a label set, `+Inf`/`-Inf`/`NaN` values, integer (milliseconds) or float
//! (OpenMetrics seconds) timestamps, OpenMetrics exemplars (`# {trace_id="..."} 1.0`, checked
//! and dropped), `_created` series, the Prometheus 3 quoted UTF-8 names
//! (`{"my.metric", a="b"} 1`), and a final `# EOF`.
//!
//! What it rejects, with the line and column: a malformed name, label or value, an unknown
//! escape in a label value, a duplicate label name, an unknown `# TYPE`, a second `# TYPE`
//! for one family, anything but blank lines after `# EOF`, and trailing garbage.
//!
//! It is linear in the page's size whatever the page holds, and bounded: a page with more
//! samples, metadata lines or labels per sample than its [`ParseLimits`] is rejected at the
//! first line over the limit (a pod is not trusted to send a sane page). Texts quoted in
//! errors are cut to a few dozen bytes.
//!
//! The result borrows from the input: names and label values are `&str` slices of it
//! unless an escape forced a copy.
//!
//! ```
//! use vllm_scaling_prom::exposition::{parse, MetricType};
//!
//! let page = "# TYPE vllm:num_requests_waiting gauge\n\
//!             vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 3.0\n";
//! let exposition = parse(page).expect("valid exposition");
//! assert_eq!(exposition.metric_type("vllm:num_requests_waiting"), Some(MetricType::Gauge));
//! let sample = exposition.samples().next().expect("one sample");
//! assert_eq!(sample.label("engine"), Some("0"));
//! assert_eq!(sample.value, 3.0);
//!
//! let err = parse("ok 1\nbroken{le=\"1\" 2\n").unwrap_err();
//! assert_eq!(err.line, 2);
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;

use vllm_scaling_core::excerpt;

/// How much one page may hold. The defaults are far above any vLLM or dcgm-exporter page
/// (a 4-engine vLLM V1 page has about 1,000 samples and 6 labels per sample) and keep a
/// hostile page's parse to tens of milliseconds and its index to tens of megabytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseLimits {
    /// The most sample lines (default 200,000).
    pub max_samples: usize,
    /// The most `# HELP`, `# TYPE` and `# UNIT` lines (default 100,000).
    pub max_metadata_lines: usize,
    /// The most labels on one sample or exemplar (default 128).
    pub max_labels_per_sample: usize,
}

impl Default for ParseLimits {
    fn default() -> Self {
        Self { max_samples: 200_000, max_metadata_lines: 100_000, max_labels_per_sample: 128 }
    }
}

/// The most bytes of a name or word quoted in an error.
const QUOTED_BYTES: usize = 64;

/// The most bytes of the offending line quoted in an error.
const EXCERPT_BYTES: usize = 120;

fn quote(text: &str) -> String {
    excerpt(text, QUOTED_BYTES, 1).into_owned()
}

/// Label sets up to this size are checked for duplicates by a scan; larger ones by a set.
const SCAN_LABELS: usize = 16;

/// The type a `# TYPE` line declares for a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MetricType {
    /// `counter`
    Counter,
    /// `gauge`
    Gauge,
    /// `histogram`
    Histogram,
    /// `summary`
    Summary,
    /// `untyped` (text format)
    Untyped,
    /// `unknown` (OpenMetrics)
    Unknown,
    /// `info` (OpenMetrics)
    Info,
    /// `stateset` (OpenMetrics)
    StateSet,
    /// `gaugehistogram` (OpenMetrics)
    GaugeHistogram,
}

impl MetricType {
    fn from_word(word: &str) -> Option<Self> {
        Some(match word {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "summary" => Self::Summary,
            "untyped" => Self::Untyped,
            "unknown" => Self::Unknown,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "gaugehistogram" => Self::GaugeHistogram,
            _ => return None,
        })
    }

    /// The word used on a `# TYPE` line.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
            Self::Untyped => "untyped",
            Self::Unknown => "unknown",
            Self::Info => "info",
            Self::StateSet => "stateset",
            Self::GaugeHistogram => "gaugehistogram",
        }
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One label of a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    /// The label name.
    pub name: Cow<'a, str>,
    /// The label value, unescaped.
    pub value: Cow<'a, str>,
}

/// A `# HELP`, `# TYPE` or `# UNIT` line.
#[derive(Clone, Debug, PartialEq)]
pub struct Metadata<'a> {
    /// The metric family the line is about.
    pub family: Cow<'a, str>,
    /// What the line says.
    pub kind: MetadataKind<'a>,
    /// The 1-based line number.
    pub line: usize,
}

/// What a metadata line says.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MetadataKind<'a> {
    /// `# HELP`: the help text, unescaped.
    Help(Cow<'a, str>),
    /// `# TYPE`.
    Type(MetricType),
    /// `# UNIT` (OpenMetrics).
    Unit(&'a str),
}

#[derive(Clone, Debug)]
struct RawSample<'a> {
    name: Cow<'a, str>,
    labels_start: u32,
    labels_end: u32,
    value: f64,
    timestamp: Option<f64>,
    line: u32,
}

/// One sample line, borrowed from an [`Exposition`].
#[derive(Clone, Copy, Debug)]
pub struct Sample<'e, 'a> {
    /// The series name (`vllm:time_to_first_token_seconds_bucket`).
    pub name: &'e str,
    /// Its labels, in the order written.
    pub labels: &'e [Label<'a>],
    /// The value (may be NaN or infinite).
    pub value: f64,
    /// The timestamp as written: milliseconds in the text format, seconds in OpenMetrics.
    pub timestamp: Option<f64>,
    /// The 1-based line number.
    pub line: usize,
}

impl<'e> Sample<'e, '_> {
    /// The value of label `name`, if the sample has it.
    #[must_use]
    pub fn label(&self, name: &str) -> Option<&'e str> {
        self.labels.iter().find(|l| l.name == name).map(|l| &*l.value)
    }
}

/// A parsed exposition page: its samples and metadata lines.
#[derive(Clone, Debug, Default)]
pub struct Exposition<'a> {
    samples: Vec<RawSample<'a>>,
    labels: Vec<Label<'a>>,
    metadata: Vec<Metadata<'a>>,
    /// Each family's `# TYPE` and its line, for the duplicate check and [`Self::metric_type`].
    types: HashMap<Cow<'a, str>, (MetricType, usize)>,
    eof: bool,
}

impl<'a> Exposition<'a> {
    /// Every sample, in page order.
    pub fn samples(&self) -> impl ExactSizeIterator<Item = Sample<'_, 'a>> + '_ {
        self.samples.iter().map(|s| self.view(s))
    }

    /// The samples whose series name is exactly `name`.
    pub fn samples_named<'s>(&'s self, name: &'s str) -> impl Iterator<Item = Sample<'s, 'a>> + 's {
        self.samples.iter().filter(move |s| s.name == name).map(|s| self.view(s))
    }

    fn view<'s>(&'s self, s: &'s RawSample<'a>) -> Sample<'s, 'a> {
        Sample {
            name: &s.name,
            labels: &self.labels[s.labels_start as usize..s.labels_end as usize],
            value: s.value,
            timestamp: s.timestamp,
            line: s.line as usize,
        }
    }

    /// The number of samples.
    #[must_use]
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether the page has no samples.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `# HELP`, `# TYPE` and `# UNIT` lines, in page order.
    #[must_use]
    pub fn metadata(&self) -> &[Metadata<'a>] {
        &self.metadata
    }

    /// The type declared for a family, if a `# TYPE` line names it.
    #[must_use]
    pub fn metric_type(&self, family: &str) -> Option<MetricType> {
        self.types.get(family).map(|&(t, _)| t)
    }

    /// The help text of a family, if a `# HELP` line names it.
    #[must_use]
    pub fn help(&self, family: &str) -> Option<&str> {
        self.metadata.iter().find_map(|m| match &m.kind {
            MetadataKind::Help(h) if m.family == family => Some(&**h),
            _ => None,
        })
    }

    /// Whether the page ended with OpenMetrics' `# EOF`.
    #[must_use]
    pub fn has_eof(&self) -> bool {
        self.eof
    }
}

/// Why a page could not be parsed, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {kind} (line: `{excerpt}`)")]
pub struct ParseError {
    /// The 1-based line number.
    pub line: usize,
    /// The 1-based column (in bytes) where the problem was found.
    pub column: usize,
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// The offending line, cut to 120 bytes (with a marker when cut).
    pub excerpt: String,
}

/// What is wrong with a line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A metric name was expected.
    #[error("expected a metric name ([a-zA-Z_:][a-zA-Z0-9_:]* or a quoted string)")]
    ExpectedMetricName,
    /// A label name was expected.
    #[error("expected a label name ([a-zA-Z_][a-zA-Z0-9_]* or a quoted string)")]
    ExpectedLabelName,
    /// A specific character was expected.
    #[error("expected {expected}, found {found}")]
    Expected {
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A quoted string does not end on its line.
    #[error("unterminated quoted string")]
    UnterminatedString,
    /// A backslash escape other than `\\`, `\"` or `\n`.
    #[error("invalid escape `\\{0}` (only \\\\, \\\" and \\n are allowed)")]
    InvalidEscape(char),
    /// The same label appears twice in one sample.
    #[error("duplicate label `{0}`")]
    DuplicateLabel(String),
    /// The sample value is not a number.
    #[error("invalid value `{0}`: not a float, +Inf, -Inf or NaN")]
    InvalidValue(String),
    /// The timestamp is not a number.
    #[error("invalid timestamp `{0}`")]
    InvalidTimestamp(String),
    /// An unknown `# TYPE`.
    #[error("unknown metric type `{0}`")]
    UnknownType(String),
    /// A second `# TYPE` line for the same family.
    #[error("second TYPE line for `{family}` (first on line {first_line})")]
    DuplicateType {
        /// The family.
        family: String,
        /// The line of the first `# TYPE`.
        first_line: usize,
    },
    /// Content after `# EOF`.
    #[error("content after `# EOF`")]
    ContentAfterEof,
    /// Unexpected characters at the end of a line.
    #[error("unexpected `{0}` after the sample")]
    TrailingCharacters(String),
    /// The page has more samples or labels than this parser indexes (2^32).
    #[error("too many samples or labels")]
    TooLarge,
    /// More sample lines than [`ParseLimits::max_samples`].
    #[error("more than {0} samples on the page")]
    TooManySamples(usize),
    /// More metadata lines than [`ParseLimits::max_metadata_lines`].
    #[error("more than {0} HELP/TYPE/UNIT lines on the page")]
    TooManyMetadataLines(usize),
    /// More labels on one sample than [`ParseLimits::max_labels_per_sample`].
    #[error("more than {0} labels on one sample")]
    TooManyLabels(usize),
}

/// Parses a whole page, within the default [`ParseLimits`].
///
/// # Errors
/// The first malformed line, with its number, column and what is wrong.
pub fn parse(text: &str) -> Result<Exposition<'_>, ParseError> {
    parse_with_limits(text, ParseLimits::default())
}

/// Parses a whole page, rejecting it at the first line over `limits`.
///
/// # Errors
/// The first malformed line or the first line over a limit, with its number, column and
/// what is wrong.
pub fn parse_with_limits(text: &str, limits: ParseLimits) -> Result<Exposition<'_>, ParseError> {
    let mut out = Exposition {
        samples: Vec::with_capacity((text.len() / 64).min(limits.max_samples)),
        labels: Vec::with_capacity((text.len() / 32).min(limits.max_samples.saturating_mul(8))),
        metadata: Vec::new(),
        types: HashMap::new(),
        eof: false,
    };
    let bytes = text.as_bytes();
    let mut pos = 0usize;
    let mut line_no = 0usize;
    while pos < bytes.len() {
        line_no += 1;
        let end = memchr::memchr(b'\n', &bytes[pos..]).map_or(bytes.len(), |i| pos + i);
        let mut line = &text[pos..end];
        if let Some(stripped) = line.strip_suffix('\r') {
            line = stripped;
        }
        pos = end + 1;
        let mut p = LineParser { line, b: line.as_bytes(), i: 0, line_no, limits };
        p.skip_ws();
        if p.at_end() {
            continue;
        }
        if out.eof {
            return Err(p.err(ParseErrorKind::ContentAfterEof));
        }
        if p.peek() == Some(b'#') {
            p.comment(&mut out)?;
        } else {
            if out.samples.len() >= limits.max_samples {
                return Err(p.err(ParseErrorKind::TooManySamples(limits.max_samples)));
            }
            p.sample(&mut out)?;
        }
    }
    Ok(out)
}

struct LineParser<'a> {
    line: &'a str,
    b: &'a [u8],
    i: usize,
    line_no: usize,
    limits: ParseLimits,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b':'
}

fn is_label_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl<'a> LineParser<'a> {
    fn err(&self, kind: ParseErrorKind) -> ParseError {
        ParseError {
            line: self.line_no,
            column: self.i + 1,
            kind,
            excerpt: excerpt(self.line, EXCERPT_BYTES, 1).into_owned(),
        }
    }

    fn found(&self) -> String {
        match self.line[self.i.min(self.line.len())..].chars().next() {
            None => "end of line".to_owned(),
            Some(c) => format!("`{c}`"),
        }
    }

    fn expected(&self, expected: &'static str) -> ParseError {
        self.err(ParseErrorKind::Expected { expected, found: self.found() })
    }

    fn at_end(&self) -> bool {
        self.i >= self.b.len()
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn skip_ws(&mut self) -> usize {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
        self.i - start
    }

    /// A run of characters accepted by `cont`, starting with one accepted by `start`.
    fn ident(&mut self, start: fn(u8) -> bool, cont: fn(u8) -> bool) -> Option<&'a str> {
        let s = self.i;
        if !self.peek().is_some_and(start) {
            return None;
        }
        self.i += 1;
        while self.peek().is_some_and(cont) {
            self.i += 1;
        }
        Some(&self.line[s..self.i])
    }

    /// A token up to the next space, tab or end of line.
    fn token(&mut self) -> &'a str {
        let s = self.i;
        while let Some(c) = self.peek() {
            if c == b' ' || c == b'\t' {
                break;
            }
            self.i += 1;
        }
        &self.line[s..self.i]
    }

    /// A double-quoted string starting at the current `"`, unescaped.
    fn quoted(&mut self) -> Result<Cow<'a, str>, ParseError> {
        debug_assert_eq!(self.peek(), Some(b'"'));
        self.i += 1;
        let start = self.i;
        let rest = &self.b[start..];
        match memchr::memchr2(b'"', b'\\', rest) {
            None => {
                self.i = self.b.len();
                Err(self.err(ParseErrorKind::UnterminatedString))
            }
            Some(k) if rest[k] == b'"' => {
                self.i = start + k + 1;
                Ok(Cow::Borrowed(&self.line[start..start + k]))
            }
            Some(k) => {
                let mut owned = String::with_capacity(k + 16);
                owned.push_str(&self.line[start..start + k]);
                self.i = start + k;
                loop {
                    match self.peek() {
                        None => return Err(self.err(ParseErrorKind::UnterminatedString)),
                        Some(b'"') => {
                            self.i += 1;
                            return Ok(Cow::Owned(owned));
                        }
                        Some(b'\\') => {
                            self.i += 1;
                            match self.peek() {
                                Some(b'\\') => owned.push('\\'),
                                Some(b'"') => owned.push('"'),
                                Some(b'n') => owned.push('\n'),
                                None => return Err(self.err(ParseErrorKind::UnterminatedString)),
                                Some(_) => {
                                    let c = self.line[self.i..].chars().next().unwrap_or('?');
                                    return Err(self.err(ParseErrorKind::InvalidEscape(c)));
                                }
                            }
                            self.i += 1;
                        }
                        Some(_) => {
                            let run = &self.b[self.i..];
                            let k = memchr::memchr2(b'"', b'\\', run).unwrap_or(run.len());
                            owned.push_str(&self.line[self.i..self.i + k]);
                            self.i += k;
                        }
                    }
                }
            }
        }
    }

    fn comment(&mut self, out: &mut Exposition<'a>) -> Result<(), ParseError> {
        self.i += 1; // '#'
        if self.skip_ws() == 0 {
            return Ok(()); // `#comment`: not a metadata line
        }
        let word_start = self.i;
        let word = self.token();
        let kind = match word {
            "HELP" | "TYPE" | "UNIT" => word,
            "EOF" => {
                self.skip_ws();
                if self.at_end() {
                    out.eof = true;
                }
                return Ok(());
            }
            _ => return Ok(()), // an ordinary comment
        };
        if self.skip_ws() == 0 {
            // `# HELP` alone: the format requires a name.
            self.i = word_start + word.len();
            return Err(self.err(ParseErrorKind::ExpectedMetricName));
        }
        let family: Cow<'a, str> = if self.peek() == Some(b'"') {
            self.quoted()?
        } else {
            Cow::Borrowed(
                self.ident(is_name_start, is_name_char).ok_or_else(|| self.err(ParseErrorKind::ExpectedMetricName))?,
            )
        };
        let has_space = self.skip_ws() > 0;
        if !has_space && !self.at_end() {
            return Err(self.expected("a space after the metric name"));
        }
        if out.metadata.len() >= self.limits.max_metadata_lines {
            self.i = 0;
            return Err(self.err(ParseErrorKind::TooManyMetadataLines(self.limits.max_metadata_lines)));
        }
        let line = self.line_no;
        let rest = &self.line[self.i..];
        let kind = match kind {
            "HELP" => MetadataKind::Help(unescape_help(rest)),
            "UNIT" => MetadataKind::Unit(rest.trim_end()),
            _ => {
                let word = rest.trim_end();
                let t =
                    MetricType::from_word(word).ok_or_else(|| self.err(ParseErrorKind::UnknownType(quote(word))))?;
                match out.types.entry(family.clone()) {
                    std::collections::hash_map::Entry::Occupied(first) => {
                        let first_line = first.get().1;
                        return Err(self.err(ParseErrorKind::DuplicateType { family: quote(&family), first_line }));
                    }
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert((t, line));
                    }
                }
                MetadataKind::Type(t)
            }
        };
        out.metadata.push(Metadata { family, kind, line });
        Ok(())
    }

    fn sample(&mut self, out: &mut Exposition<'a>) -> Result<(), ParseError> {
        let labels_start = out.labels.len();
        let mut name: Option<Cow<'a, str>> = self.ident(is_name_start, is_name_char).map(Cow::Borrowed);
        if name.is_none() && self.peek() != Some(b'{') {
            return Err(self.err(ParseErrorKind::ExpectedMetricName));
        }
        if self.peek() == Some(b'{') {
            self.label_set(out, &mut name)?;
        }
        let Some(name) = name else {
            return Err(self.err(ParseErrorKind::ExpectedMetricName));
        };
        if self.skip_ws() == 0 {
            return Err(if self.at_end() {
                self.expected("a value")
            } else {
                self.expected("a space before the value")
            });
        }
        let value = self.number(ParseErrorKind::InvalidValue)?;
        let mut timestamp = None;
        if self.skip_ws() > 0 && !self.at_end() && self.peek() != Some(b'#') {
            timestamp = Some(self.number(ParseErrorKind::InvalidTimestamp)?);
            self.skip_ws();
        }
        if self.peek() == Some(b'#') {
            self.exemplar()?;
        }
        if !self.at_end() {
            let rest = excerpt(&self.line[self.i..], 40, 1).into_owned();
            return Err(self.err(ParseErrorKind::TrailingCharacters(rest)));
        }
        let labels_end = out.labels.len();
        let (Ok(labels_start), Ok(labels_end), Ok(line)) =
            (u32::try_from(labels_start), u32::try_from(labels_end), u32::try_from(self.line_no))
        else {
            return Err(self.err(ParseErrorKind::TooLarge));
        };
        out.samples.push(RawSample { name, labels_start, labels_end, value, timestamp, line });
        Ok(())
    }

    /// `{name="value",...}`; a leading quoted string without `=` is the metric name
    /// (Prometheus 3 UTF-8 names) and fills `name` when it is still empty.
    fn label_set(&mut self, out: &mut Exposition<'a>, name: &mut Option<Cow<'a, str>>) -> Result<(), ParseError> {
        let first = out.labels.len();
        self.i += 1; // '{'
        let mut first_item = true;
        // Past SCAN_LABELS labels, the names seen so far (a scan of each new name against
        // all earlier ones is quadratic: 100,000 labels took 20 CPU-seconds).
        let mut seen: Option<HashSet<Cow<'a, str>>> = None;
        loop {
            self.skip_ws();
            if self.peek() == Some(b'}') {
                self.i += 1;
                return Ok(());
            }
            let name_col = self.i;
            let label_name: Cow<'a, str> = if self.peek() == Some(b'"') {
                let quoted = self.quoted()?;
                self.skip_ws();
                if first_item && name.is_none() && matches!(self.peek(), Some(b',' | b'}')) {
                    *name = Some(quoted);
                    first_item = false;
                    if self.peek() == Some(b',') {
                        self.i += 1;
                    }
                    continue;
                }
                quoted
            } else {
                Cow::Borrowed(
                    self.ident(is_label_start, is_label_char)
                        .ok_or_else(|| self.err(ParseErrorKind::ExpectedLabelName))?,
                )
            };
            first_item = false;
            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(self.expected("`=` after the label name"));
            }
            self.i += 1;
            self.skip_ws();
            if self.peek() != Some(b'"') {
                return Err(self.expected("`\"` to open the label value"));
            }
            let value = self.quoted()?;
            let count = out.labels.len() - first;
            if count >= self.limits.max_labels_per_sample {
                self.i = name_col;
                return Err(self.err(ParseErrorKind::TooManyLabels(self.limits.max_labels_per_sample)));
            }
            let duplicate = match &mut seen {
                None if count < SCAN_LABELS => out.labels[first..].iter().any(|l| l.name == label_name),
                None => {
                    let mut set: HashSet<Cow<'a, str>> = out.labels[first..].iter().map(|l| l.name.clone()).collect();
                    let duplicate = !set.insert(label_name.clone());
                    seen = Some(set);
                    duplicate
                }
                Some(set) => !set.insert(label_name.clone()),
            };
            if duplicate {
                self.i = name_col;
                return Err(self.err(ParseErrorKind::DuplicateLabel(quote(&label_name))));
            }
            out.labels.push(Label { name: label_name, value });
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {}
                _ => return Err(self.expected("`,` or `}` after the label value")),
            }
        }
    }

    fn number(&mut self, kind: fn(String) -> ParseErrorKind) -> Result<f64, ParseError> {
        let start = self.i;
        let tok = self.token();
        parse_float(tok).ok_or_else(|| {
            self.i = start;
            self.err(kind(excerpt(tok, 40, 1).into_owned()))
        })
    }

    /// An OpenMetrics exemplar: `# {labels} value [timestamp]`. Checked, then dropped.
    fn exemplar(&mut self) -> Result<(), ParseError> {
        self.i += 1; // '#'
        self.skip_ws();
        if self.peek() != Some(b'{') {
            return Err(self.expected("`{` to open an exemplar's labels"));
        }
        let mut scratch = Exposition::default();
        let mut no_name = Some(Cow::Borrowed(""));
        self.label_set(&mut scratch, &mut no_name)?;
        if self.skip_ws() == 0 {
            return Err(self.expected("a space before the exemplar value"));
        }
        self.number(ParseErrorKind::InvalidValue)?;
        if self.skip_ws() > 0 && !self.at_end() {
            self.number(ParseErrorKind::InvalidTimestamp)?;
            self.skip_ws();
        }
        Ok(())
    }
}

/// Writes one sample line in the text format, quoting the name and label names in the
/// Prometheus 3 UTF-8 form when they are not legacy identifiers. Values use Rust's shortest
/// round-trip float form, so parsing the line gives back the same bits (NaN aside).
///
/// ```
/// use std::borrow::Cow;
/// use vllm_scaling_prom::exposition::{Label, parse, render_sample};
///
/// let mut line = String::new();
/// let labels = [Label { name: Cow::Borrowed("le"), value: Cow::Borrowed("+Inf") }];
/// render_sample(&mut line, "x_bucket", &labels, 3.0, None);
/// assert_eq!(line, "x_bucket{le=\"+Inf\"} 3\n");
/// assert_eq!(parse(&line).unwrap().samples().next().unwrap().value, 3.0);
/// ```
pub fn render_sample(out: &mut String, name: &str, labels: &[Label<'_>], value: f64, timestamp: Option<f64>) {
    use std::fmt::Write as _;
    let legacy_name = name.bytes().next().is_some_and(is_name_start) && name.bytes().all(is_name_char);
    let mut first = true;
    if legacy_name {
        out.push_str(name);
    } else {
        out.push('{');
        push_quoted(out, name);
        first = false;
    }
    if !labels.is_empty() || !legacy_name {
        if legacy_name {
            out.push('{');
        }
        for l in labels {
            if !first {
                out.push(',');
            }
            first = false;
            if l.name.bytes().next().is_some_and(is_label_start) && l.name.bytes().all(is_label_char) {
                out.push_str(&l.name);
            } else {
                push_quoted(out, &l.name);
            }
            out.push('=');
            push_quoted(out, &l.value);
        }
        out.push('}');
    }
    let _ = write!(out, " {value}");
    if let Some(ts) = timestamp {
        let _ = write!(out, " {ts}");
    }
    out.push('\n');
}

fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A sample value or timestamp. Rust's float syntax covers what exporters print with Go's
/// `strconv.FormatFloat` and Python's `repr` (`1`, `-2.5e-3`, `+Inf`, `-Inf`, `NaN`), and
/// is case-insensitive for the special values as Go's `ParseFloat` is.
fn parse_float(tok: &str) -> Option<f64> {
    tok.parse::<f64>().ok()
}

fn unescape_help(text: &str) -> Cow<'_, str> {
    if !text.contains('\\') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            // OpenMetrics also escapes quotes in HELP text.
            Some('"') => out.push('"'),
            // HELP text defines no other escape; keep anything else as written.
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> (String, Vec<(String, String)>, f64, Option<f64>) {
        let e = parse(text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
        assert_eq!(e.len(), 1, "{text:?}");
        let s = e.samples().next().unwrap();
        let labels = s.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect();
        (s.name.to_owned(), labels, s.value, s.timestamp)
    }

    fn err(text: &str) -> ParseError {
        match parse(text) {
            Ok(e) => panic!("{text:?} parsed into {} samples", e.len()),
            Err(e) => e,
        }
    }

    #[test]
    fn plain_and_labelled_samples() {
        assert_eq!(one("up 1"), ("up".into(), vec![], 1.0, None));
        assert_eq!(one("a:b_c 2.5e-3 1700000000000\n").3, Some(1.7e12));
        let (_, labels, v, _) = one("x{a=\"1\", b = \"two\" ,} -3");
        assert_eq!(labels, vec![("a".into(), "1".into()), ("b".into(), "two".into())]);
        assert_eq!(v, -3.0);
        assert_eq!(one("x{} 0").1, vec![]);
        assert_eq!(one("  x\t7\t").2, 7.0);
    }

    #[test]
    fn special_values() {
        assert_eq!(one("x +Inf").2, f64::INFINITY);
        assert_eq!(one("x -Inf").2, f64::NEG_INFINITY);
        assert!(one("x NaN").2.is_nan());
        assert!(one("x nan").2.is_nan());
        assert_eq!(one("x{le=\"+Inf\"} 3").1[0].1, "+Inf");
    }

    #[test]
    fn escapes_are_unescaped_and_borrowed_when_absent() {
        let text = r#"x{path="C:\\dir",q="say \"hi\"",nl="a\nb",plain="v"} 1"#;
        let e = parse(text).unwrap();
        let s = e.samples().next().unwrap();
        assert_eq!(s.label("path"), Some("C:\\dir"));
        assert_eq!(s.label("q"), Some("say \"hi\""));
        assert_eq!(s.label("nl"), Some("a\nb"));
        assert!(matches!(s.labels[3].value, Cow::Borrowed("v")));
    }

    #[test]
    fn metadata_lines() {
        let text = "# HELP x Line one\\nline two \\\\ done\n# TYPE x counter\n# UNIT x seconds\n# just a comment\n#nospace\nx_total 1\n";
        let e = parse(text).unwrap();
        assert_eq!(e.help("x"), Some("Line one\nline two \\ done"));
        assert_eq!(e.metric_type("x"), Some(MetricType::Counter));
        assert_eq!(e.metadata().len(), 3);
        assert_eq!(e.metadata()[2].kind, MetadataKind::Unit("seconds"));
        assert_eq!(e.len(), 1);
        // HELP with no text (dcgm-exporter emits these).
        assert_eq!(parse("# HELP DCGM_FI_DEV_COUNT\n").unwrap().help("DCGM_FI_DEV_COUNT"), Some(""));
    }

    #[test]
    fn openmetrics_eof_exemplars_and_float_timestamps() {
        let text = "# TYPE foo counter\nfoo_total 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\nfoo_created 1520430000.123\n# EOF\n";
        let e = parse(text).unwrap();
        assert!(e.has_eof());
        assert_eq!(e.len(), 2);
        assert_eq!(e.samples().next().unwrap().timestamp, Some(1_520_879_607.789));
        assert_eq!(parse("a 1 # {x=\"y\"} 2 3\n").unwrap().len(), 1);
        assert_eq!(err("# EOF\na 1\n").kind, ParseErrorKind::ContentAfterEof);
        assert!(parse("# EOF\n\n").unwrap().has_eof());
        assert!(matches!(err("a 1 # x 2").kind, ParseErrorKind::Expected { .. }));
    }

    #[test]
    fn utf8_quoted_names() {
        let (name, labels, ..) = one(r#"{"my.metric", "weird label"="v", a="b"} 1"#);
        assert_eq!(name, "my.metric");
        assert_eq!(labels, vec![("weird label".into(), "v".into()), ("a".into(), "b".into())]);
        let e = parse("# TYPE \"my.metric\" gauge\n").unwrap();
        assert_eq!(e.metric_type("my.metric"), Some(MetricType::Gauge));
    }

    #[test]
    fn crlf_and_blank_lines() {
        let e = parse("a 1\r\n\r\n\nb 2\r\n").unwrap();
        assert_eq!(e.samples().map(|s| s.name).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(e.samples().nth(1).unwrap().line, 4);
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let e = err("a 1\nb{x=\"1\" 2\n");
        assert_eq!((e.line, e.column), (2, 9));
        assert!(e.to_string().contains("line 2, column 9"), "{e}");
        assert!(e.to_string().contains("`,` or `}`"), "{e}");

        assert!(matches!(err("a").kind, ParseErrorKind::Expected { expected: "a value", .. }));
        assert!(matches!(err("a{x=\"1\"}").kind, ParseErrorKind::Expected { .. }));
        assert_eq!(err("a one").kind, ParseErrorKind::InvalidValue("one".into()));
        assert_eq!(err("a 1 soon").kind, ParseErrorKind::InvalidTimestamp("soon".into()));
        assert!(matches!(err("a 1 2 3").kind, ParseErrorKind::TrailingCharacters(_)));
        assert_eq!(err("1a 2").kind, ParseErrorKind::ExpectedMetricName);
        assert_eq!(err("a{1=\"x\"} 2").kind, ParseErrorKind::ExpectedLabelName);
        assert!(matches!(err("a{x 2").kind, ParseErrorKind::Expected { .. }));
        assert!(matches!(err("a{x=1} 2").kind, ParseErrorKind::Expected { .. }));
        assert_eq!(err("a{x=\"1} 2").kind, ParseErrorKind::UnterminatedString);
        assert_eq!(err("a{x=\"\\t\"} 2").kind, ParseErrorKind::InvalidEscape('t'));
        assert_eq!(err("a{x=\"1\",x=\"2\"} 2").kind, ParseErrorKind::DuplicateLabel("x".into()));
        assert_eq!(err("# TYPE a gauges").kind, ParseErrorKind::UnknownType("gauges".into()));
        assert!(matches!(
            err("# TYPE a gauge\n# TYPE a gauge").kind,
            ParseErrorKind::DuplicateType { first_line: 1, .. }
        ));
        assert_eq!(err("# HELP").kind, ParseErrorKind::ExpectedMetricName);
        assert_eq!(err("# TYPE 9x gauge").kind, ParseErrorKind::ExpectedMetricName);
        assert_eq!(err("{} 1").kind, ParseErrorKind::ExpectedMetricName);
        assert!(matches!(err("a\"b 1").kind, ParseErrorKind::Expected { .. }));
    }

    #[test]
    fn limits_reject_the_first_line_over_them() {
        let limits = ParseLimits { max_samples: 2, max_metadata_lines: 1, max_labels_per_sample: 3 };
        let e = parse_with_limits("a 1\nb 2\nc 3\n", limits).unwrap_err();
        assert_eq!((e.line, &e.kind), (3, &ParseErrorKind::TooManySamples(2)));
        assert!(e.to_string().contains("more than 2 samples"), "{e}");
        let e = parse_with_limits("# TYPE a gauge\n# HELP a x\n", limits).unwrap_err();
        assert_eq!((e.line, &e.kind), (2, &ParseErrorKind::TooManyMetadataLines(1)));
        let e = parse_with_limits("a{w=\"1\",x=\"2\",y=\"3\",z=\"4\"} 1\n", limits).unwrap_err();
        assert_eq!((e.line, e.column, &e.kind), (1, 21, &ParseErrorKind::TooManyLabels(3)));
        // Exemplar labels count too.
        let e = parse_with_limits("a 1 # {w=\"1\",x=\"2\",y=\"3\",z=\"4\"} 1\n", limits).unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::TooManyLabels(3));
        assert_eq!(parse_with_limits("a{w=\"1\",x=\"2\",y=\"3\"} 1\nb 2\n# TYPE a gauge\n", limits).unwrap().len(), 2);
        // The defaults accept a page far larger than vLLM's.
        let page: String =
            (0..10_000).map(|i| format!("x{{engine=\"{i}\",le=\"{i}\",model_name=\"m\"}} 1\n")).collect();
        assert_eq!(parse(&page).unwrap().len(), 10_000);
    }

    #[test]
    fn duplicates_are_found_in_large_label_sets_and_type_lines() {
        let labels = |n: usize, dup: Option<usize>| {
            let mut line = "x{".to_owned();
            for i in 0..n {
                line.push_str(&format!("l{i}=\"v\","));
            }
            if let Some(d) = dup {
                line.push_str(&format!("l{d}=\"again\""));
            }
            line + "} 1\n"
        };
        let lifted = ParseLimits { max_labels_per_sample: usize::MAX, ..ParseLimits::default() };
        for n in [1, SCAN_LABELS - 1, SCAN_LABELS, SCAN_LABELS + 1, 5_000] {
            assert_eq!(parse_with_limits(&labels(n, None), lifted).unwrap().samples().next().unwrap().labels.len(), n);
            for d in [0, n / 2, n - 1] {
                let e = parse_with_limits(&labels(n, Some(d)), lifted).unwrap_err();
                assert_eq!(e.kind, ParseErrorKind::DuplicateLabel(format!("l{d}")), "n {n}, dup {d}");
            }
        }
        let types: String = (0..5_000).map(|i| format!("# TYPE f{i} gauge\n")).collect();
        let e = parse(&format!("{types}# TYPE f1234 counter\n")).unwrap_err();
        assert_eq!(
            (e.line, e.kind),
            (5_001, ParseErrorKind::DuplicateType { family: "f1234".into(), first_line: 1_235 })
        );
        assert_eq!(parse(&types).unwrap().metric_type("f4999"), Some(MetricType::Gauge));
    }

    #[test]
    fn quoted_words_in_errors_are_bounded() {
        let word = "w".repeat(10 << 20);
        let e = parse(&format!("# TYPE a {word}\n")).unwrap_err();
        let text = e.to_string();
        assert!(text.len() < 400, "{} bytes", text.len());
        assert!(matches!(&e.kind, ParseErrorKind::UnknownType(w) if w.len() <= QUOTED_BYTES), "{text}");
        assert!(e.excerpt.len() <= EXCERPT_BYTES && e.excerpt.ends_with("more bytes]"), "{}", e.excerpt);
        let name = "n".repeat(1 << 20);
        let e = parse(&format!("x{{\"{name}\"=\"1\",\"{name}\"=\"2\"}} 1\n")).unwrap_err();
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
        let e = parse(&format!("# TYPE \"{name}\" gauge\n# TYPE \"{name}\" gauge\n")).unwrap_err();
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
        let e = parse(&format!("x {word}\n")).unwrap_err();
        assert!(e.to_string().len() < 400, "{} bytes", e.to_string().len());
    }

    #[test]
    fn errors_never_panic_on_multibyte_text() {
        for text in ["é 1", "a{é=\"1\"} 2", "a{x=\"é\\é\"} 1", "a 1 é", "a é", "# TYPE a é", "a{x=\"1\"}é"] {
            assert!(parse(text).is_err(), "{text}");
        }
        assert_eq!(one("a{x=\"é\"} 1").1[0].1, "é");
    }
}
