//! Re-exporting vLLM pods' own metrics (feature `exporter`): parse each pod's `/metrics`
//! page with the project's exposition parser, keep the autoscaling families under the
//! names vLLM uses, add the pod's labels, and write them back in the text format.
//!
//! This is for clusters where Prometheus does not scrape pods directly: the exporter
//! scrapes the vLLM pods of its node and serves their queue, KV-cache and latency series
//! next to the GPU ones, so one scrape of the DaemonSet carries both.

use std::collections::{BTreeMap, HashMap};

use vllm_scaling_prom::exposition::{self, MetadataKind, MetricType, ParseError};

/// The families re-exported by default: what the metric catalog's vLLM rules read.
/// Histograms by base name, counters by their `_total` name, gauges by name.
pub const AUTOSCALING_FAMILIES: &[&str] = &[
    "vllm:num_requests_waiting",
    "vllm:num_requests_running",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:e2e_request_latency_seconds",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:generation_tokens_total",
    "vllm:prompt_tokens_total",
    "vllm:request_success_total",
    "vllm:num_preemptions_total",
];

/// Which families of a vLLM page are re-exported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FamilyFilter {
    /// [`AUTOSCALING_FAMILIES`].
    #[default]
    Autoscaling,
    /// Every family whose name starts with `vllm:`.
    AllVllm,
}

impl FamilyFilter {
    fn keeps(self, family: &str) -> bool {
        match self {
            Self::Autoscaling => AUTOSCALING_FAMILIES.contains(&family),
            Self::AllVllm => family.starts_with("vllm:"),
        }
    }
}

#[derive(Debug, Default)]
struct FamilyOut {
    kind: Option<MetricType>,
    help: Option<String>,
    lines: Vec<String>,
}

/// The re-exported families, gathered from several pods' pages.
///
/// ```
/// use vllm_scaling_nvml::{FamilyFilter, Reexport};
///
/// let page = concat!(
///     "# TYPE vllm:num_requests_waiting gauge\n",
///     "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 4.0\n",
///     "# TYPE python_gc_objects_collected_total counter\n",
///     "python_gc_objects_collected_total{generation=\"0\"} 12.0\n",
/// );
/// let mut out = Reexport::new(FamilyFilter::Autoscaling);
/// let kept = out.add_page(page, &[("namespace".into(), "llm".into()), ("pod".into(), "vllm-0".into())]).unwrap();
/// assert_eq!(kept, 1);
/// assert_eq!(
///     out.render(),
///     concat!(
///         "# TYPE vllm:num_requests_waiting gauge\n",
///         "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\",namespace=\"llm\",pod=\"vllm-0\"} 4\n",
///     )
/// );
/// ```
#[derive(Debug, Default)]
pub struct Reexport {
    filter: FamilyFilter,
    families: BTreeMap<String, FamilyOut>,
}

impl Reexport {
    /// Nothing gathered yet.
    #[must_use]
    pub fn new(filter: FamilyFilter) -> Self {
        Self { filter, families: BTreeMap::new() }
    }

    /// Adds a page's kept samples, each with `target_labels` added (replacing a label of
    /// the same name). Returns how many samples were kept.
    ///
    /// # Errors
    /// When the page is not valid exposition text; nothing of it is kept then.
    pub fn add_page(&mut self, page: &str, target_labels: &[(String, String)]) -> Result<usize, ParseError> {
        let parsed = exposition::parse(page)?;
        let mut types: HashMap<&str, MetricType> = HashMap::new();
        let mut helps: HashMap<&str, &str> = HashMap::new();
        for m in parsed.metadata() {
            match &m.kind {
                MetadataKind::Type(t) => {
                    types.insert(&m.family, *t);
                }
                MetadataKind::Help(h) => {
                    helps.insert(&m.family, h);
                }
                _ => {}
            }
        }
        let mut kept = 0;
        for s in parsed.samples() {
            let Some((family, kind, meta_name)) = family_of(s.name, &types) else { continue };
            if !self.filter.keeps(&family) {
                continue;
            }
            let out = self.families.entry(family).or_default();
            out.kind = out.kind.or(kind);
            if out.help.is_none() {
                out.help = meta_name.and_then(|n| helps.get(n)).map(|h| (*h).to_owned());
            }
            let mut line = String::with_capacity(s.name.len() + 64);
            line.push_str(s.name);
            line.push('{');
            let mut first = true;
            let own = s.labels.iter().filter(|l| !target_labels.iter().any(|(k, _)| *k == l.name));
            for (k, v) in own.map(|l| (&*l.name, &*l.value)).chain(target_labels.iter().map(|(k, v)| (&**k, &**v))) {
                if !first {
                    line.push(',');
                }
                first = false;
                line.push_str(k);
                line.push_str("=\"");
                escape_into(&mut line, v);
                line.push('"');
            }
            line.push_str("} ");
            line.push_str(&format_value(s.value));
            out.lines.push(line);
            kept += 1;
        }
        Ok(kept)
    }

    /// The gathered families in the text format, each family's lines together, families
    /// in name order.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (family, f) in &self.families {
            if let Some(help) = &f.help {
                out.push_str("# HELP ");
                out.push_str(family);
                out.push(' ');
                out.push_str(&help.replace('\\', "\\\\").replace('\n', "\\n"));
                out.push('\n');
            }
            if let Some(kind) = f.kind {
                out.push_str("# TYPE ");
                out.push_str(family);
                out.push(' ');
                // Text format 0.0.4 knows only these; OpenMetrics-only types go out untyped.
                out.push_str(match kind {
                    MetricType::Counter => "counter",
                    MetricType::Gauge => "gauge",
                    MetricType::Histogram => "histogram",
                    MetricType::Summary => "summary",
                    _ => "untyped",
                });
                out.push('\n');
            }
            for line in &f.lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

/// The output family of a series name, its type, and the name its metadata is under.
/// `None` for series that are not re-exported at all (`_created`).
///
/// Histogram and summary series belong to their base family; a counter keeps its
/// `_total` name (that is the family name in text format 0.0.4, and the sample name
/// either way); `_created` series are dropped (vLLM V1 exposes them, nothing reads them).
fn family_of<'n>(
    name: &'n str,
    types: &HashMap<&str, MetricType>,
) -> Option<(String, Option<MetricType>, Option<&'n str>)> {
    if let Some(t) = types.get(name) {
        return Some((name.to_owned(), Some(*t), Some(name)));
    }
    for suffix in ["_bucket", "_sum", "_count", "_total", "_created"] {
        let Some(base) = name.strip_suffix(suffix) else { continue };
        match (suffix, types.get(base)) {
            (_, None) => {}
            ("_created", Some(_)) => return None,
            ("_total", Some(t)) => return Some((name.to_owned(), Some(*t), Some(base))),
            (_, Some(t @ (MetricType::Histogram | MetricType::Summary | MetricType::GaugeHistogram))) => {
                return Some((base.to_owned(), Some(*t), Some(base)));
            }
            _ => {}
        }
    }
    if name.ends_with("_created") {
        return None;
    }
    Some((name.to_owned(), None, None))
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A value as the text format writes it.
pub(crate) fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_PAGE: &str = r#"# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="meta-llama/Llama-3.1-8B"} 7.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_sum{engine="0",model_name="meta-llama/Llama-3.1-8B"} 12.5
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.1",model_name="meta-llama/Llama-3.1-8B"} 3.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="meta-llama/Llama-3.1-8B"} 10.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B"} 10.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B"} 2048.0
# HELP vllm:generation_tokens_created Number of generation tokens processed.
# TYPE vllm:generation_tokens_created gauge
vllm:generation_tokens_created{engine="0",model_name="meta-llama/Llama-3.1-8B"} 1.7e+09
# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16"} 1.0
"#;

    #[test]
    fn keeps_the_autoscaling_families_with_pod_labels() {
        let mut r = Reexport::new(FamilyFilter::Autoscaling);
        let labels = [("namespace".to_owned(), "llm".to_owned()), ("pod".to_owned(), "vllm-0".to_owned())];
        assert_eq!(r.add_page(V1_PAGE, &labels).unwrap(), 6);
        let text = r.render();
        assert!(text.contains("# TYPE vllm:time_to_first_token_seconds histogram\n"), "{text}");
        assert!(text.contains(
            "vllm:time_to_first_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"meta-llama/Llama-3.1-8B\",namespace=\"llm\",pod=\"vllm-0\"} 10\n"
        ));
        assert!(text.contains("# TYPE vllm:generation_tokens_total counter\n"));
        assert!(!text.contains("_created"), "{text}");
        assert!(!text.contains("cache_config_info"), "{text}");
        // The output is itself a valid page, with the same samples.
        let back = exposition::parse(&text).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back.metric_type("vllm:time_to_first_token_seconds"), Some(MetricType::Histogram));
    }

    #[test]
    fn two_pods_share_one_family_block() {
        let mut r = Reexport::new(FamilyFilter::AllVllm);
        r.add_page(V1_PAGE, &[("pod".into(), "a".into())]).unwrap();
        r.add_page(V1_PAGE, &[("pod".into(), "b".into())]).unwrap();
        let text = r.render();
        assert_eq!(text.matches("# TYPE vllm:num_requests_waiting gauge").count(), 1);
        let back = exposition::parse(&text).unwrap();
        let pods: Vec<&str> = back.samples_named("vllm:num_requests_waiting").filter_map(|s| s.label("pod")).collect();
        assert_eq!(pods, ["a", "b"]);
        assert!(text.contains("vllm:cache_config_info"), "AllVllm keeps every vllm: family");
    }

    #[test]
    fn a_garbled_page_is_an_error_with_its_line() {
        let mut r = Reexport::new(FamilyFilter::Autoscaling);
        let err = r.add_page("vllm:num_requests_waiting 1\nvllm:num_requests_running{ 2\n", &[]).unwrap_err();
        assert_eq!(err.line, 2);
        assert!(r.render().is_empty(), "nothing of a bad page is kept");
    }
}
