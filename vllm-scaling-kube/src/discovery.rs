//! Pure discovery helpers: object-name validity, the models a vLLM container serves, the
//! workloads bound to a policy by annotation, and the metrics endpoint of a pod.

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use vllm_scaling_core::{PodInfo, PodPhase};

/// The annotation that binds a workload to a policy by name, for policies without
/// `scaleTargetRef` (the production-stack Helm chart sets it on the Deployments it creates).
pub const POLICY_ANNOTATION: &str = "autoscaler.production-stack/policy";
/// Prometheus' scrape annotation: `"false"` turns direct scraping of the pod off.
pub const SCRAPE_ANNOTATION: &str = "prometheus.io/scrape";
/// Prometheus' port annotation.
pub const PORT_ANNOTATION: &str = "prometheus.io/port";
/// Prometheus' path annotation.
pub const PATH_ANNOTATION: &str = "prometheus.io/path";
/// Prometheus' scheme annotation (`http` or `https`).
pub const SCHEME_ANNOTATION: &str = "prometheus.io/scheme";
/// The port vLLM's OpenAI server listens on by default.
pub const DEFAULT_VLLM_PORT: u16 = 8000;

/// Whether `name` is a valid Kubernetes object name (an RFC 1123 subdomain: at most 253
/// lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit).
/// A `scaleTargetRef.name` that is not one is resolved as a served model id.
#[must_use]
pub fn is_object_name(name: &str) -> bool {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    !name.is_empty()
        && name.len() <= 253
        && name.chars().all(ok_char)
        && alnum(name.chars().next())
        && alnum(name.chars().last())
        && name.split('.').all(|label| !label.is_empty())
}

/// The model ids one container serves, from its command and args: `--model X`,
/// `--model=X`, `--served-model-name X [Y...]` (or `=X`), and `vllm serve X`, also inside a
/// `sh -c "..."` string. Empty when the container does not look like a vLLM server.
#[must_use]
pub fn served_models(command: &[String], args: &[String]) -> Vec<String> {
    let mut tokens: Vec<String> = Vec::new();
    for t in command.iter().chain(args) {
        // A shell string (`sh -c "vllm serve m --port 8000"`) is split on whitespace.
        if t.contains(' ') {
            tokens.extend(t.split_whitespace().map(str::to_owned));
        } else {
            tokens.push(t.clone());
        }
    }
    let mut models = Vec::new();
    let mut push = |m: &str| {
        let m = m.trim_matches(|c| c == '"' || c == '\'');
        if !m.is_empty() && !models.iter().any(|x| x == m) {
            models.push(m.to_owned());
        }
    };
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if let Some(v) = t.strip_prefix("--model=") {
            push(v);
        } else if t == "--model" {
            if let Some(v) = tokens.get(i + 1) {
                push(v);
                i += 1;
            }
        } else if let Some(v) = t.strip_prefix("--served-model-name=") {
            push(v);
        } else if t == "--served-model-name" {
            // argparse nargs="+": every following token up to the next flag.
            while let Some(v) = tokens.get(i + 1).filter(|v| !v.starts_with('-')) {
                push(v);
                i += 1;
            }
        } else if t == "serve"
            && i > 0
            && tokens[i - 1].rsplit('/').next() == Some("vllm")
            && let Some(v) = tokens.get(i + 1).filter(|v| !v.starts_with('-'))
        {
            push(v);
            i += 1;
        }
        i += 1;
    }
    models
}

/// Every container of every pod template inside a workload object (`spec.template`,
/// LeaderWorkerSet's `leaderTemplate`/`workerTemplate`, or any other nested template).
fn containers(workload: &Value) -> Vec<&Value> {
    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a Value>, depth: usize) {
        if depth > 8 {
            return;
        }
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    if (k == "containers" || k == "initContainers")
                        && let Some(list) = child.as_array()
                    {
                        out.extend(list.iter());
                    } else {
                        walk(child, out, depth + 1);
                    }
                }
            }
            Value::Array(list) => list.iter().for_each(|c| walk(c, out, depth + 1)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(spec) = workload.get("spec") {
        walk(spec, &mut out, 0);
    }
    out
}

/// Whether a workload object (any kind with pod templates) serves `model`.
#[must_use]
pub fn workload_serves(workload: &Value, model: &str) -> bool {
    containers(workload).into_iter().any(|c| {
        let strings = |key: &str| -> Vec<String> {
            c.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default()
        };
        served_models(&strings("command"), &strings("args")).iter().any(|m| m == model)
    })
}

/// How a reference was matched against candidate workloads.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Match {
    /// Exactly one workload: its name.
    One(String),
    /// None.
    None,
    /// Several: their names.
    Several(Vec<String>),
}

/// The single workload among `workloads` that serves `model`.
#[must_use]
pub fn match_model<'a>(workloads: impl IntoIterator<Item = &'a Value>, model: &str) -> Match {
    to_match(workloads.into_iter().filter(|w| workload_serves(w, model)))
}

/// The single workload among `workloads` annotated `autoscaler.production-stack/policy:
/// <policy>`.
#[must_use]
pub fn match_annotation<'a>(workloads: impl IntoIterator<Item = &'a Value>, policy: &str) -> Match {
    to_match(workloads.into_iter().filter(|w| w["metadata"]["annotations"][POLICY_ANNOTATION].as_str() == Some(policy)))
}

fn to_match<'a>(found: impl Iterator<Item = &'a Value>) -> Match {
    let mut names: Vec<String> = found.filter_map(|w| w["metadata"]["name"].as_str().map(str::to_owned)).collect();
    names.sort();
    match names.len() {
        0 => Match::None,
        1 => Match::One(names.remove(0)),
        _ => Match::Several(names),
    }
}

/// The core's view of a pod: phase, readiness, deletion, and the URL of its metrics
/// endpoint from the `prometheus.io/*` annotations (defaults: the container port named
/// `http`, else 8000; path `/metrics`; no URL when the pod has no IP yet or
/// `prometheus.io/scrape` is `"false"`).
///
/// The URL is built from checked parts, never by pasting an annotation into it: the
/// scheme is `http` or `https`, the host is the pod's own `status.podIP` (an IP address),
/// the port a number from 1 to 65535 and the path only path characters (no `?`, `#`,
/// `\`, spaces or `@`-tricks can move the request to another authority). A pod whose
/// annotations do not give such an endpoint gets no URL and a `metrics_url_error` saying
/// why, which its scrape reports.
#[must_use]
pub fn pod_info(pod: &Pod) -> PodInfo {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Pending") => PodPhase::Pending,
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        _ => PodPhase::Unknown,
    };
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let scrape_off = annotations.get(SCRAPE_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("false"));
    let ip = status.and_then(|s| s.pod_ip.as_deref()).filter(|ip| !ip.is_empty());
    let (metrics_url, metrics_url_error) = match ip {
        Some(ip) if !scrape_off => match metrics_url(pod, &annotations, ip) {
            Ok(url) => (Some(url), None),
            Err(why) => (None, Some(why)),
        },
        _ => (None, None),
    };
    PodInfo { name, phase, ready, deleting, metrics_url, metrics_url_error }
}

/// The metrics URL of a pod with IP `ip`, from its annotations and container ports.
fn metrics_url(
    pod: &Pod,
    annotations: &std::collections::BTreeMap<String, String>,
    ip: &str,
) -> Result<String, String> {
    let quoted = |v: &str| vllm_scaling_core::excerpt(v, 100, 1).into_owned();
    let scheme = match annotations.get(SCHEME_ANNOTATION).map(|s| s.trim()) {
        None => "http",
        Some(s) if s.eq_ignore_ascii_case("http") => "http",
        Some(s) if s.eq_ignore_ascii_case("https") => "https",
        Some(s) => return Err(format!("annotation {SCHEME_ANNOTATION} is `{}`: only http or https", quoted(s))),
    };
    let ip: std::net::IpAddr = ip.parse().map_err(|_| format!("status.podIP `{}` is not an IP address", quoted(ip)))?;
    let port = match annotations.get(PORT_ANNOTATION) {
        Some(p) => match p.trim().parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => return Err(format!("annotation {PORT_ANNOTATION} is `{}`: not a port (1-65535)", quoted(p))),
        },
        None => pod
            .spec
            .as_ref()
            .and_then(|s| {
                s.containers.iter().flat_map(|c| c.ports.iter().flatten()).find(|p| p.name.as_deref() == Some("http"))
            })
            .and_then(|p| u16::try_from(p.container_port).ok())
            .filter(|&p| p > 0)
            .unwrap_or(DEFAULT_VLLM_PORT),
    };
    let path = annotations.get(PATH_ANNOTATION).map_or("/metrics", |p| p.trim());
    // RFC 3986 path characters only (pchar and `/`): no `?` or `#` to cut the path short,
    // no `\` that some parsers read as `/`, no whitespace or control characters.
    let path_char = |c: char| c.is_ascii_alphanumeric() || "-._~%!$&'()*+,;=:@/".contains(c);
    if path.is_empty() || !path.chars().all(path_char) {
        return Err(format!("annotation {PATH_ANNOTATION} is `{}`: not a URL path", quoted(path)));
    }
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    // The host is written by us, right after `://`, and the path starts with `/`: nothing
    // an annotation holds can become the authority.
    let host = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    };
    Ok(format!("{scheme}://{host}:{port}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn object_names() {
        assert!(is_object_name("llama-70b"));
        assert!(is_object_name("a.b-c"));
        assert!(!is_object_name("meta-llama/Llama-2-70b-hf"));
        assert!(!is_object_name("Llama"));
        assert!(!is_object_name("-x"));
        assert!(!is_object_name("a..b"));
        assert!(!is_object_name(""));
    }

    #[test]
    fn served_models_from_every_cli_form() {
        assert_eq!(
            served_models(&s(&["vllm", "serve", "meta-llama/Llama-2-70b-hf"]), &s(&["--port", "8000"])),
            ["meta-llama/Llama-2-70b-hf"]
        );
        assert_eq!(served_models(&s(&["/usr/local/bin/vllm"]), &s(&["serve", "m1"])), ["m1"]);
        assert_eq!(
            served_models(
                &s(&["python3", "-m", "vllm.entrypoints.openai.api_server"]),
                &s(&["--model", "/models/x", "--served-model-name", "a", "b", "--port", "8000"])
            ),
            ["/models/x", "a", "b"]
        );
        assert_eq!(served_models(&[], &s(&["--model=m2", "--served-model-name=alias"])), ["m2", "alias"]);
        assert_eq!(served_models(&s(&["sh", "-c", "vllm serve m3 --tensor-parallel-size 2"]), &[]), ["m3"]);
        assert!(served_models(&s(&["nginx"]), &s(&["-g", "daemon off;"])).is_empty());
        // `serve` alone is not enough: it must follow the vllm binary.
        assert!(served_models(&s(&["hugo", "serve", "site"]), &[]).is_empty());
    }

    fn deployment(name: &str, args: &[&str], annotations: Value) -> Value {
        json!({"metadata": {"name": name, "annotations": annotations},
               "spec": {"template": {"spec": {"containers": [{"name": "vllm", "image": "vllm/vllm-openai", "args": args}]}}}})
    }

    #[test]
    fn model_and_annotation_matching() {
        let ws = [
            deployment("llama", &["--model", "meta-llama/Llama-2-70b-hf"], json!({})),
            deployment("mistral", &["--model", "mistralai/Mistral-7B"], json!({POLICY_ANNOTATION: "p"})),
            deployment("mistral-2", &["--model=mistralai/Mistral-7B"], json!({})),
        ];
        assert_eq!(match_model(&ws, "meta-llama/Llama-2-70b-hf"), Match::One("llama".into()));
        assert_eq!(
            match_model(&ws, "mistralai/Mistral-7B"),
            Match::Several(vec!["mistral".into(), "mistral-2".into()])
        );
        assert_eq!(match_model(&ws, "gpt2"), Match::None);
        assert_eq!(match_annotation(&ws, "p"), Match::One("mistral".into()));
        assert_eq!(match_annotation(&ws, "q"), Match::None);
        let lws = json!({"metadata": {"name": "lws"}, "spec": {"leaderWorkerTemplate": {"workerTemplate": {"spec": {"containers": [{"command": ["vllm", "serve", "big"]}]}}}}});
        assert!(workload_serves(&lws, "big"));
    }

    #[test]
    fn pod_metrics_url_from_annotations_and_ports() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {PORT_ANNOTATION: "9100", PATH_ANNOTATION: "stats"}},
            "spec": {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "10.0.0.7", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        let info = pod_info(&pod);
        assert_eq!(info.metrics_url.as_deref(), Some("http://10.0.0.7:9100/stats"));
        assert!(info.ready);
        assert_eq!(info.phase, PodPhase::Running);

        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "deletionTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "fd00::7"}
        }))
        .unwrap();
        let info = pod_info(&pod);
        assert_eq!(info.metrics_url.as_deref(), Some("http://[fd00::7]:8080/metrics"));
        assert!(!info.ready && info.deleting);

        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": {SCRAPE_ANNOTATION: "false"}},
            "spec": {"containers": [{"name": "vllm"}]},
            "status": {"phase": "Pending", "podIP": "10.0.0.8"}
        }))
        .unwrap();
        let info = pod_info(&pod);
        assert_eq!(info.metrics_url, None);
        assert_eq!(info.phase, PodPhase::Pending);

        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"podIP": "10.1.1.1", "phase": "Running"}})).unwrap();
        assert_eq!(pod_info(&pod).metrics_url.as_deref(), Some("http://10.1.1.1:8000/metrics"));
    }

    fn annotated(annotations: Value) -> PodInfo {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "annotations": annotations},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": "10.0.0.9", "phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap();
        pod_info(&pod)
    }

    #[test]
    fn hostile_annotations_never_move_the_scrape_to_another_host() {
        // Pasted into the URL, this scheme sent the scrape to `attacker:1`.
        for scheme in ["http://attacker:1/x#", "https://attacker:1/x?", "file", "gopher", "ftp", "", "http "] {
            let info = annotated(json!({SCHEME_ANNOTATION: scheme}));
            if scheme.trim() == "http" {
                assert_eq!(info.metrics_url.as_deref(), Some("http://10.0.0.9:8000/metrics"));
                continue;
            }
            assert_eq!(info.metrics_url, None, "{scheme:?}");
            let why = info.metrics_url_error.unwrap();
            assert!(why.contains(SCHEME_ANNOTATION) && why.contains("only http or https"), "{why}");
        }
        assert_eq!(
            annotated(json!({SCHEME_ANNOTATION: "HTTPS"})).metrics_url.as_deref(),
            Some("https://10.0.0.9:8000/metrics")
        );
        for path in ["/x#@attacker:1/", "/x?y", "/a\\b", "/a b", "/a\nb", ""] {
            let info = annotated(json!({PATH_ANNOTATION: path}));
            assert_eq!(info.metrics_url, None, "{path:?}");
            assert!(info.metrics_url_error.unwrap().contains("not a URL path"), "{path:?}");
        }
        // `@` is a path character: after our `/` the authority stays ours.
        assert_eq!(
            annotated(json!({PATH_ANNOTATION: "/@x:1"})).metrics_url.as_deref(),
            Some("http://10.0.0.9:8000/@x:1")
        );
        assert_eq!(
            annotated(json!({PATH_ANNOTATION: "@attacker:1/x"})).metrics_url.as_deref(),
            Some("http://10.0.0.9:8000/@attacker:1/x")
        );
        for port in ["abc", "0", "65536", "80@attacker", "-1"] {
            let info = annotated(json!({PORT_ANNOTATION: port}));
            assert_eq!(info.metrics_url, None, "{port:?}");
            assert!(info.metrics_url_error.unwrap().contains("not a port"), "{port:?}");
        }
        // The host is the pod's status.podIP, and only an IP address.
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
            "status": {"podIP": "attacker:1/x#", "phase": "Running"}
        }))
        .unwrap();
        let info = pod_info(&pod);
        assert_eq!(info.metrics_url, None);
        assert!(info.metrics_url_error.unwrap().contains("not an IP address"));
        // A 10 MB annotation is quoted in a bounded error.
        let info = annotated(json!({SCHEME_ANNOTATION: "x".repeat(10 << 20)}));
        assert!(info.metrics_url_error.unwrap().len() < 300);
    }
}
