//! `vllm-autoscaler validate FILE|DIR|-...`: every problem of every policy, with its line
//! and column, checked the way the API server checks it (the CRD's schema, so the
//! verdict matches `kubectl apply`) and then by core validation (every cross-field rule).

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize as _;
use serde_json::{Value, json};
use vllm_scaling_core::{Metric, MetricSource, PolicyErrors, TargetType, policy_from_value};
use vllm_scaling_kube::admission;

use super::locate::{locate, parse_path};

/// Arguments of `validate`.
#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  vllm-autoscaler validate policy.yaml\n  vllm-autoscaler validate deploy/\n  \
                        kubectl get vsp -o yaml | vllm-autoscaler validate -")]
pub(crate) struct Args {
    /// Policy files (YAML, possibly with several `---` documents, or JSON), directories
    /// (walked for .yaml, .yml and .json files), or `-` for standard input.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
}

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Severity {
    /// The policy is refused.
    Error,
    /// Valid, but probably not what was meant.
    Warning,
    /// Not a policy, or nothing to check.
    Note,
}

/// One thing `validate` says about a document.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Finding {
    /// Error, warning or note.
    pub(crate) severity: Severity,
    /// 1-based line and column, where known.
    pub(crate) at: Option<(usize, usize)>,
    /// The field path (`spec.scalingRules[0].threshold`), where there is one.
    pub(crate) path: Option<String>,
    /// What is wrong and why.
    pub(crate) message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, column)) = self.at {
            write!(f, "{line}:{column}: ")?;
        }
        match self.severity {
            Severity::Error => {}
            Severity::Warning => f.write_str("warning: ")?,
            Severity::Note => f.write_str("note: ")?,
        }
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What one document is.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Verdict {
    /// A valid policy, by name.
    Ok(String),
    /// A policy with errors.
    Invalid,
    /// Not a policy: skipped.
    Skipped,
}

/// Checks every document of `text`: per document its verdict and findings. `in_walk`:
/// the file was found by walking a directory, so a document that is neither a Kubernetes
/// object nor a policy spec (a dashboard, a values file) is skipped with a note instead
/// of being an error.
pub(crate) fn check_text(text: &str, in_walk: bool) -> Vec<(Verdict, Vec<Finding>)> {
    let mut out = Vec::new();
    for (index, document) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match serde_yaml_ng::Value::deserialize(document) {
            Ok(serde_yaml_ng::Value::Null) => {}
            Ok(value) => out.push(check_document(text, index, value, in_walk)),
            Err(e) => {
                let at = e.location().map(|l| (l.line(), l.column()));
                let finding = Finding {
                    severity: Severity::Error,
                    at,
                    path: None,
                    message: format!("not valid YAML: {}", strip_location(&e.to_string())),
                };
                out.push((Verdict::Invalid, vec![finding]));
                // The YAML stream cannot be resynchronized after a syntax error.
                break;
            }
        }
    }
    if out.is_empty() {
        let finding = Finding {
            severity: Severity::Error,
            at: None,
            path: None,
            message: "no policy found: the text is empty".into(),
        };
        out.push((Verdict::Invalid, vec![finding]));
    }
    out
}

/// serde_yaml_ng appends ` at line L column C`; the finding says it in front instead.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// Documents that are not policies: a note, and for an HPA or a KEDA ScaledObject the
/// command that converts it.
fn other_kind(doc: &Value) -> Option<String> {
    let kind = doc.get("kind")?.as_str()?;
    if kind == vllm_scaling_core::KIND {
        return None;
    }
    let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let convertible = (kind == "HorizontalPodAutoscaler" && api_version.starts_with("autoscaling/"))
        || (kind == "ScaledObject" && api_version.starts_with("keda.sh/"));
    Some(if convertible {
        format!("this is a {kind}: `vllm-autoscaler import FILE` converts it into a vLLMScalingPolicy; skipped")
    } else {
        format!("skipped: a {kind} ({api_version}), not a vLLMScalingPolicy")
    })
}

fn check_document(text: &str, index: usize, value: serde_yaml_ng::Value, in_walk: bool) -> (Verdict, Vec<Finding>) {
    let error = |path: Option<&str>, message: String| Finding {
        severity: Severity::Error,
        at: locate(text, index, &parse_path(path.unwrap_or("(document)"))),
        path: path.map(str::to_owned),
        message,
    };
    let json = match serde_json::to_value(&value) {
        Ok(v) => v,
        Err(e) => return (Verdict::Invalid, vec![error(None, format!("not a policy: {e} (keys must be text)"))]),
    };
    if let Some(note) = other_kind(&json) {
        let finding = Finding {
            severity: Severity::Note,
            at: locate(text, index, &parse_path("kind")),
            path: None,
            message: note,
        };
        return (Verdict::Skipped, vec![finding]);
    }
    let Some(map) = json.as_object() else {
        if in_walk {
            let message = format!("skipped: {}, not a policy", shape(&json));
            return (Verdict::Skipped, vec![Finding { severity: Severity::Note, at: None, path: None, message }]);
        }
        return (Verdict::Invalid, vec![error(None, format!("expected a policy (a mapping), got {}", shape(&json)))]);
    };
    // A bare spec is checked as the spec of an object; its paths are shown without `spec.`.
    let whole = ["apiVersion", "kind", "spec", "metadata"].iter().any(|k| map.contains_key(*k));
    if in_walk && !whole && !map.contains_key("scalingRules") && !map.contains_key("maxReplicas") {
        let message =
            "skipped: neither a Kubernetes object nor a policy spec (no kind, spec or scalingRules)".to_owned();
        return (Verdict::Skipped, vec![Finding { severity: Severity::Note, at: None, path: None, message }]);
    }
    let object = if whole { json.clone() } else { json!({"spec": json}) };
    let shown = |path: &str| -> String {
        if whole { path.to_owned() } else { path.strip_prefix("spec.").unwrap_or(path).to_owned() }
    };

    // 1. The structure, as the API server's schema checks it: every problem at once.
    let structural: Vec<(String, String)> =
        admission::check_schema(&object).into_iter().map(|v| (shown(&v.path), v.reason)).collect();
    // 2. Core validation: the cross-field rules, each with its field. When the structure is
    // wrong core stops at the first field it cannot read; that field is reported above.
    let (policy, resolved) = match policy_from_value(value) {
        Ok(ok) if structural.is_empty() => ok,
        core => {
            let mut findings: Vec<Finding> =
                structural.iter().map(|(path, reason)| error(Some(path), reason.clone())).collect();
            if let Err(PolicyErrors(errors)) = &core {
                for e in errors {
                    let path = if e.path == "(document)" { None } else { Some(shown(&e.path)) };
                    // A field the schema already reported (core stops at the first field it
                    // cannot read, and names it or its parent).
                    let overlaps = |p: &str| {
                        path.as_deref().is_none_or(|c| {
                            p == c
                                || p.starts_with(&format!("{c}."))
                                || p.starts_with(&format!("{c}["))
                                || c.starts_with(&format!("{p}."))
                        })
                    };
                    if !structural.iter().any(|(p, _)| overlaps(p)) {
                        let hint = rule_reference_hint(&object, &e.path).unwrap_or_default();
                        findings.push(error(path.as_deref(), format!("{}{hint}", user_terms(&e.reason))));
                    }
                }
            }
            findings.sort_by_key(|f| f.at);
            return (Verdict::Invalid, findings);
        }
    };
    let mut findings = Vec::new();
    for (i, rule) in resolved.rules.iter().enumerate() {
        let at = |field: &str| shown(&format!("spec.scalingRules[{i}].{field}"));
        let mut note = |severity: Severity, path: String, message: String| {
            findings.push(Finding { severity, at: locate(text, index, &parse_path(&path)), path: Some(path), message });
        };
        if let Some(query) = &rule.query
            && let Err(e) = promql_parser::parser::parse(query)
        {
            note(Severity::Error, at("query"), format!("not valid PromQL: {}", e.trim()));
        }
        for (field, warning) in warnings(rule, policy.spec.scaling_rules[i].source.is_some()) {
            note(Severity::Warning, at(field), warning);
        }
    }
    let verdict = if findings.iter().any(|f| f.severity == Severity::Error) {
        Verdict::Invalid
    } else {
        Verdict::Ok(policy.metadata.name.clone().unwrap_or_else(|| "(unnamed)".to_owned()))
    };
    (verdict, findings)
}

/// For a reference to a rule that does not exist (`panic.rules[0]`,
/// `scaleToZero.activationRule`, `predictive.rule`), "; did you mean `x`?" naming the
/// closest rule key (a rule's name, else its metric).
fn rule_reference_hint(object: &Value, path: &str) -> Option<String> {
    let referencing = path.starts_with("spec.panic.rules[")
        || path == "spec.scaleToZero.activationRule"
        || path == "spec.predictive.rule";
    if !referencing {
        return None;
    }
    let mut node = object;
    for seg in parse_path(path) {
        node = match seg {
            super::locate::Seg::Field(f) => node.get(f)?,
            super::locate::Seg::Index(i) => node.get(i)?,
        };
    }
    let given = node.as_str()?;
    let keys: Vec<&str> = object
        .pointer("/spec/scalingRules")?
        .as_array()?
        .iter()
        .filter_map(|r| r.get("name").or_else(|| r.get("metric")).and_then(Value::as_str))
        .collect();
    admission::closest(given, keys).map(|k| format!("; did you mean `{k}`?"))
}

fn shape(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "a list",
        Value::String(_) => "text",
        Value::Number(_) => "a number",
        Value::Bool(_) => "true or false",
        Value::Null => "nothing",
        Value::Object(_) => "a mapping",
    }
}

/// serde's Rust type names in a policy author's words.
fn user_terms(reason: &str) -> String {
    let mut out = reason.to_owned();
    for (rust, user) in [
        ("expected i32", "expected a whole number from -2147483648 to 2147483647"),
        ("expected u32", "expected a whole number from 0 to 4294967295"),
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number of at least 0"),
        ("expected f64", "expected a number"),
        ("expected a string", "expected text"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected a mapping (`field: value` pairs)"),
    ] {
        out = out.replace(rust, user);
    }
    out
}

/// The fastest request time that is plausible for each latency metric, in ms: an LLM
/// request's end-to-end time includes generating its tokens (tens of ms each), its first
/// token a prefill, and one decode step is rarely under a millisecond.
fn plausible_floor_ms(metric: Metric) -> Option<f64> {
    match metric {
        Metric::Latency => Some(100.0),
        Metric::Ttft => Some(10.0),
        Metric::Itl => Some(1.0),
        _ => None,
    }
}

/// Valid but suspicious: the rule's field and a sentence saying why and what to do.
fn warnings(rule: &vllm_scaling_core::ResolvedRule, source_given: bool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let name = rule.metric.name();
    match (rule.metric, rule.source) {
        (Metric::GpuUtilization | Metric::GpuMemoryUsed, MetricSource::Pods) => out.push((
            "source",
            format!(
            "source `pods` reads vLLM's /metrics, which has no GPU series: `{name}` will be missing (and hold every \
             scale-down); use `auto` with the gpu-exporter DaemonSet or dcgm-exporter, `prometheus` with DCGM series, \
             or `nvml`"
            ),
        )),
        (Metric::GpuUtilization | Metric::GpuMemoryUsed, MetricSource::Auto) => out.push((
            "metric",
            format!(
            "`{name}` does not come from vLLM: with {} the controller reads it from the GPU exporter on each pod's \
             node (the DaemonSet the Helm chart installs, or deploy/gpu-exporter), dcgm-exporter, or DCGM series in \
             Prometheus; where none runs, the rule is missing and holds every scale-down",
            if source_given { "source `auto`" } else { "no `source`" }
            ),
        )),
        _ => {}
    }
    if let Some(floor) = plausible_floor_ms(rule.metric)
        && rule.threshold < floor
    {
        let seconds = if rule.threshold <= 60.0 {
            format!(
                "; thresholds are in milliseconds: did you mean {} ({} s)?",
                rule.threshold * 1000.0,
                rule.threshold
            )
        } else {
            String::new()
        };
        out.push((
            "threshold",
            format!(
                "a {name} threshold of {} ms is below any plausible request time (under {floor} ms), so the rule would \
             always ask for more replicas{seconds}",
                rule.threshold
            ),
        ));
    }
    if rule.metric == Metric::KvCacheUsage && rule.threshold <= 1.0 && rule.target_type == TargetType::AverageValue {
        out.push(("threshold", format!(
            "kv_cache_usage is a percentage (0-100) here, while vLLM exports a 0-1 fraction: a threshold of {} means \
             {}%; did you mean {}?",
            rule.threshold,
            rule.threshold,
            rule.threshold * 100.0
        )));
    }
    out
}

/// Every file under `dir` with a policy extension, sorted, recursively; a Helm chart (Go
/// templates, not YAML until rendered) is skipped with a note.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && path.join("Chart.yaml").is_file() {
            eprintln!(
                "{}: note: skipped: a Helm chart; validate what it renders (`helm template ... | vllm-autoscaler validate -`)",
                path.display()
            );
        } else if path.is_dir() {
            walk(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml" || e == "json") {
            out.push(path);
        }
    }
    Ok(())
}

/// Validates every input; exit 0 when every policy is valid (warnings and skipped
/// documents allowed), 1 otherwise.
pub(crate) fn run(args: Args) -> ExitCode {
    let mut failed = false;
    let mut sources: Vec<(String, bool, std::io::Result<String>)> = Vec::new();
    for input in &args.inputs {
        if input.as_os_str() == "-" {
            let mut text = String::new();
            let read = std::io::stdin().read_to_string(&mut text).map(|_| text);
            sources.push(("-".to_owned(), false, read));
        } else if input.is_dir() {
            let mut files = Vec::new();
            if let Err(e) = walk(input, &mut files) {
                eprintln!("{}: cannot read the directory: {e}", input.display());
                failed = true;
            }
            if files.is_empty() {
                eprintln!("{}: note: no .yaml, .yml or .json files here", input.display());
            }
            sources.extend(files.into_iter().map(|f| (f.display().to_string(), true, std::fs::read_to_string(&f))));
        } else {
            sources.push((input.display().to_string(), false, std::fs::read_to_string(input)));
        }
    }
    for (shown, in_walk, text) in sources {
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{shown}: cannot read: {e}");
                failed = true;
                continue;
            }
        };
        let results = check_text(&text, in_walk);
        let many = results.len() > 1;
        for (i, (verdict, findings)) in results.into_iter().enumerate() {
            let doc = if many { format!("{shown}[{i}]") } else { shown.clone() };
            for finding in &findings {
                let gap = if finding.at.is_some() { "" } else { " " };
                eprintln!("{shown}:{gap}{finding}");
            }
            match verdict {
                Verdict::Ok(name) => println!("{doc}: ok ({name})"),
                Verdict::Invalid => failed = true,
                Verdict::Skipped => {}
            }
        }
    }
    if failed { ExitCode::from(1) } else { ExitCode::SUCCESS }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings(text: &str) -> Vec<String> {
        check_text(text, false).into_iter().flat_map(|(_, f)| f).map(|f| f.to_string()).collect()
    }

    #[test]
    fn every_structural_error_at_once_with_line_and_column() {
        let text = "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: x}\nspec:\n  minReplicas: two\n  maxReplicas: 5\n  scalingRules:\n    - metric: gpu_util\n      threshold: 75\n    - metric: queue_length\n      threshhold: 10\n";
        let got = findings(text);
        assert_eq!(
            got,
            [
                "5:3: spec.minReplicas: expected a whole number, got the text \"two\"",
                "8:7: spec.scalingRules[0].metric: the text \"gpu_util\" is not one of queue_length, running_requests, \
                 kv_cache_usage, gpu_utilization, gpu_memory_used, latency, ttft, itl, queue_time, tokens_per_second, \
                 requests_per_second, custom; did you mean `gpu_utilization`?",
                "10:7: spec.scalingRules[1].threshold: is required",
                "11:7: spec.scalingRules[1].threshhold: unknown field `threshhold`; did you mean `threshold`?",
            ]
        );
    }

    #[test]
    fn every_cross_field_error_at_once_with_line_and_column() {
        let text = "maxReplicas: 2\nminReplicas: 5\nscalingRules:\n  - {metric: queue_length, threshold: 1}\n  - {metric: queue_length, threshold: 2}\n";
        assert_eq!(
            findings(text),
            [
                "2:1: minReplicas: must not exceed maxReplicas (5 > 2)",
                "5:6: scalingRules[1].metric: duplicate rule `queue_length` (also scalingRules[0])",
            ]
        );
    }

    #[test]
    fn a_reference_to_a_rule_suggests_the_closest_one() {
        let text = "maxReplicas: 5\nscalingRules:\n  - {metric: custom, name: arrivals, query: 'sum(x)', threshold: 1}\n  - {metric: queue_length, threshold: 5}\npanic: {rules: [arrivls, queue_length]}\n";
        let got = findings(text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("5:17: panic.rules[0]: no scaling rule is named `arrivls`"), "{got:?}");
        assert!(got[0].ends_with("; did you mean `arrivals`?"), "{got:?}");
    }

    #[test]
    fn promql_is_parsed_and_warnings_do_not_fail() {
        let text =
            "maxReplicas: 5\nscalingRules:\n  - {metric: custom, name: c, query: 'sum(rate(x[1m]', threshold: 1}\n";
        let results = check_text(text, false);
        assert_eq!(results[0].0, Verdict::Invalid);
        assert!(
            results[0].1[0].to_string().starts_with("3:31: scalingRules[0].query: not valid PromQL"),
            "{:?}",
            results[0].1
        );
        let seed = include_str!("../../policies/example-policy.yaml");
        let results = check_text(seed, false);
        assert_eq!(results[0].0, Verdict::Ok("example-policy".into()));
        let warnings: Vec<String> = results[0].1.iter().map(ToString::to_string).collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0]
                .starts_with("14:7: warning: spec.scalingRules[0].metric: `gpu_utilization` does not come from vLLM"),
            "{warnings:?}"
        );
        let text = "maxReplicas: 5\nscalingRules:\n  - {metric: latency, threshold: 2}\n  - {metric: kv_cache_usage, threshold: 0.8}\n";
        let results = check_text(text, false);
        assert!(matches!(results[0].0, Verdict::Ok(_)));
        let all: Vec<String> = results[0].1.iter().map(ToString::to_string).collect();
        assert!(all[0].contains("did you mean 2000 (2 s)?"), "{all:?}");
        assert!(all[1].contains("did you mean 80?"), "{all:?}");
    }

    #[test]
    fn other_kinds_are_skipped_with_a_note() {
        let text = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: h}\n---\napiVersion: v1\nkind: ConfigMap\n";
        let results = check_text(text, false);
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|(v, _)| *v == Verdict::Skipped));
        assert_eq!(
            results[0].1[0].to_string(),
            "2:1: note: this is a HorizontalPodAutoscaler: `vllm-autoscaler import FILE` converts it into a vLLMScalingPolicy; skipped"
        );
        assert_eq!(results[1].1[0].to_string(), "6:1: note: skipped: a ConfigMap (v1), not a vLLMScalingPolicy");
    }

    #[test]
    fn yaml_errors_and_type_errors_read_as_the_user_wrote_them() {
        let got = findings("maxReplicas: 5\nscalingRules: [\n");
        assert!(got[0].starts_with("3:1: not valid YAML"), "{got:?}");
        let got = findings("maxReplicas: 99999999999\nscalingRules: [{metric: queue_length, threshold: 1}]\n");
        assert!(got[0].contains("expected a whole number from -2147483648 to 2147483647"), "{got:?}");
    }
}
