//! The manifests in `deploy/`: they parse, the Helm chart's copies agree with the plain
//! manifests, and the RBAC allows every request the controller actually makes.

mod common;

use std::path::PathBuf;
use std::sync::Arc;

use common::*;
use serde_yaml_ng::Value;
use vllm_scaling_core::FakeClock;
use vllm_scaling_kube::fake_api::{
    document_of_kind as find, manifest_documents, rbac_allows as allows, rbac_grants as grants, rbac_view,
};
use vllm_scaling_kube::{LeaderElector, Leadership, LeaseConfig};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(path: &str) -> Vec<Value> {
    manifest_documents(&repo(path))
}

#[test]
fn every_manifest_parses_with_a_kind() {
    for path in [
        "deploy/crd.yaml",
        "deploy/controller/rbac.yaml",
        "deploy/controller/deployment.yaml",
        "deploy/monitoring/servicemonitor.yaml",
        "deploy/monitoring/podmonitor-vllm.yaml",
        "deploy/monitoring/prometheusrule.yaml",
        "deploy/examples/example-policy.yaml",
    ] {
        let docs = documents(path);
        assert!(!docs.is_empty(), "{path}");
        for d in docs {
            assert!(d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some(), "{path}: {d:?}");
        }
    }
    let values: Value = serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/values.yaml")).unwrap();
    assert_eq!(
        values["autoscaler"]["enabled"],
        Value::Bool(false),
        "the chart installs the controller only when asked"
    );
    let chart: Value = serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/Chart.yaml")).unwrap();
    assert_eq!(chart["name"].as_str(), Some("vllm-autoscaler"));
}

#[test]
fn the_helm_chart_copies_agree_with_the_plain_manifests() {
    assert_eq!(
        read("deploy/helm/vllm-autoscaler/files/grafana-dashboard.json"),
        read("deploy/monitoring/grafana-dashboard.json"),
        "copy deploy/monitoring/grafana-dashboard.json into the chart's files/"
    );
    // The alerts, rendered the way `tpl` renders them with the chart's defaults.
    let values: Value = serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/values.yaml")).unwrap();
    let flapping = values["monitoring"]["prometheusRule"]["flappingDirectionChangesPerHour"].as_u64().unwrap();
    let rendered = read("deploy/helm/vllm-autoscaler/files/alerts.yaml")
        .replace("{{ .Values.monitoring.prometheusRule.flappingDirectionChangesPerHour }}", &flapping.to_string())
        .replace(r#"{{ "{{" }}"#, "{{")
        .replace(r#"{{ "}}" }}"#, "}}");
    assert!(!rendered.contains("{{ ."), "an unrendered value is left: {rendered}");
    let rendered: Value = serde_yaml_ng::from_str(&rendered).unwrap();
    let plain = documents("deploy/monitoring/prometheusrule.yaml");
    assert_eq!(rendered, plain[0]["spec"]);
    // The ClusterRole's rules.
    let rules: Value =
        serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/files/clusterrole-rules.yaml")).unwrap();
    assert_eq!(rules, find(&documents("deploy/controller/rbac.yaml"), "ClusterRole")["rules"]);
    // The KEDA scaler's ClusterRole rules.
    let rules: Value =
        serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/files/keda-scaler-clusterrole-rules.yaml")).unwrap();
    assert_eq!(rules, find(&documents("deploy/keda/scaler.yaml"), "ClusterRole")["rules"]);
}

/// The chart's KEDA scaler is opt-in, serves gRPC over TLS only, and shares the
/// controller's Prometheus settings.
#[test]
fn the_helm_chart_keda_scaler_is_opt_in_and_tls_only() {
    let values_text = read("deploy/helm/vllm-autoscaler/values.yaml");
    let values: Value = serde_yaml_ng::from_str(&values_text).unwrap();
    assert_eq!(values["kedaScaler"]["enabled"], Value::Bool(false), "the chart installs the scaler only when asked");
    assert_eq!(values["kedaScaler"]["listenPort"].as_u64(), Some(9443));
    let chart = read("deploy/helm/vllm-autoscaler/templates/keda-scaler.yaml");
    assert!(chart.starts_with("{{- if .Values.kedaScaler.enabled }}"), "the scaler is behind kedaScaler.enabled");
    assert!(chart.trim_end().ends_with("{{- end }}"));
    assert!(chart.contains("{{ .Files.Get \"files/keda-scaler-clusterrole-rules.yaml\" }}"));
    for arg in [
        "- keda-scaler",
        "- --tls-cert-file=/etc/vllm-keda-scaler/tls/tls.crt",
        "- --tls-key-file=/etc/vllm-keda-scaler/tls/tls.key",
        "- --metrics-addr=0.0.0.0:8080",
        "{{- include \"vllm-autoscaler.engineArgs\" . | trim | nindent 12 }}",
    ] {
        assert!(chart.contains(arg), "keda-scaler.yaml lacks `{arg}`");
    }
    let controller = read("deploy/helm/vllm-autoscaler/templates/controller.yaml");
    assert!(controller.contains("{{- include \"vllm-autoscaler.engineArgs\" . | trim | nindent 12 }}"));
    for dir in [repo("deploy/helm/vllm-autoscaler/templates"), repo("deploy/helm/vllm-autoscaler/files")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(!text.contains("insecure-no-tls"), "{}: the chart never serves plaintext gRPC", path.display());
        }
    }
    assert!(!values_text.contains("insecure-no-tls"), "values.yaml: the chart never serves plaintext gRPC");
}

/// The kinds the controller scales through `/scale` (apps' and the two vLLM operators').
const WORKLOADS: [&str; 5] = ["deployments", "statefulsets", "replicasets", "leaderworkersets", "vllmruntimes"];

#[tokio::test]
async fn the_rbac_allows_every_request_the_controller_makes() {
    let h = Harness::seed().await;
    // A rescale (scale read and patch, pods, events, status), then a failing one (more events).
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    h.advance(15);
    h.ctx.metrics_source().fail(&Harness::target(), "down");
    h.reconcile(&h.ctx).await;
    // The same failure again: the recorder patches the first event's series.
    h.advance(15);
    h.reconcile(&h.ctx).await;
    // Leader election in the controller's namespace.
    let clock = FakeClock::new(h.now());
    let mut elector = LeaderElector::new(
        h.server.client(),
        LeaseConfig::new("vllm-autoscaler", "vllm-autoscaler", "a"),
        Arc::new(clock.clone()),
        Leadership::candidate(),
    );
    elector.try_acquire_or_renew().await.unwrap();
    elector.try_acquire_or_renew().await.unwrap();
    elector.release().await.unwrap();
    // The watch of policies across namespaces.
    let api: kube::Api<vllm_scaling_kube::VllmScalingPolicyResource> = kube::Api::all(h.server.client());
    let _ = api.list(&Default::default()).await.unwrap();
    let mut watch = std::pin::pin!(api.watch(&Default::default(), "0").await.unwrap());
    let _ = tokio::time::timeout(std::time::Duration::from_millis(100), futures::StreamExt::next(&mut watch)).await;

    let rbac = documents("deploy/controller/rbac.yaml");
    let cluster_rules = &find(&rbac, "ClusterRole")["rules"];
    let role = find(&rbac, "Role");
    let role_ns = role["metadata"]["namespace"].as_str().unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for request in h.server.requests() {
        let Some((group, resource, verb, namespace)) = rbac_view(&request) else { continue };
        let ok = allows(cluster_rules, &group, &resource, &verb)
            || (namespace.as_deref() == Some(role_ns) && allows(&role["rules"], &group, &resource, &verb));
        assert!(ok, "RBAC forbids {verb} {group}/{resource} in {namespace:?} ({} {})", request.method, request.path);
        seen.insert(format!("{verb} {group}/{resource}"));
    }
    // The traffic covered every kind of request the controller makes.
    for expected in [
        "watch autoscaler.production-stack/vllmscalingpolicies",
        "patch autoscaler.production-stack/vllmscalingpolicies/status",
        "get apps/deployments/scale",
        "patch apps/deployments/scale",
        "list apps/deployments",
        "list /pods",
        "list autoscaling/horizontalpodautoscalers",
        "create events.k8s.io/events",
        "patch events.k8s.io/events",
        "get coordination.k8s.io/leases",
        "create coordination.k8s.io/leases",
        "update coordination.k8s.io/leases",
    ] {
        assert!(seen.contains(expected), "{expected} not exercised: {seen:#?}");
    }
    // Every grant is used: the RBAC is exactly the controller's traffic. Workload kinds
    // are alike (a grant on statefulsets/scale is used when deployments/scale is), since
    // the traffic scales a Deployment only.
    let workload = |resource: &str| {
        let (plural, sub) = resource.split_once('/').map_or((resource, None), |(p, s)| (p, Some(s)));
        let kind = if WORKLOADS.contains(&plural) { "<workload>" } else { plural };
        sub.map_or_else(|| kind.to_owned(), |sub| format!("{kind}/{sub}"))
    };
    let used: std::collections::BTreeSet<String> = seen
        .iter()
        .map(|s| {
            let (verb, rest) = s.split_once(' ').unwrap();
            let (_, resource) = rest.split_once('/').unwrap();
            format!("{verb} {}", workload(resource))
        })
        .collect();
    for (rules, what) in [(cluster_rules, "ClusterRole"), (&role["rules"], "Role")] {
        for (group, resource, verb) in grants(rules) {
            assert!(
                used.contains(&format!("{verb} {}", workload(&resource))),
                "the {what} grants {verb} on {group}/{resource}, which the controller never requests: remove it \
                 (traffic: {seen:#?})"
            );
        }
    }
    // The controller never writes a workload itself, and never deletes anything.
    assert!(
        !allows(cluster_rules, "apps", "deployments", "patch")
            && !allows(cluster_rules, "apps", "deployments", "update")
    );
    assert!(!seen.iter().any(|s| s.starts_with("delete")));
}

/// Every `.Values.a.b` a chart template reads (outside `range` blocks, where `.` is the
/// item) is set in values.yaml: a typo renders as an empty string in Helm, not an error.
#[test]
fn every_value_the_chart_templates_read_is_defined() {
    let values: Value = serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/values.yaml")).unwrap();
    let dir = repo("deploy/helm/vllm-autoscaler/templates");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices(".Values.") {
            let rest = &text[at + ".Values.".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_')).unwrap_or(rest.len());
            let key = rest[..end].trim_end_matches('.');
            let mut v = &values;
            for part in key.split('.') {
                v = v.get(part).unwrap_or_else(|| panic!("{}: .Values.{key} is not in values.yaml", path.display()));
            }
            checked += 1;
        }
    }
    assert!(checked > 30, "only {checked} value references found");
}

/// The controller finds the GPU exporter pods that deploy/ and the chart create, by their
/// label, and reads them on their `metrics` port: no flag ties the two together.
#[test]
fn the_gpu_exporter_pods_are_the_ones_the_controller_looks_for() {
    let ds = find(&documents("deploy/gpu-exporter/daemonset.yaml"), "DaemonSet").clone();
    let template = &ds["spec"]["template"];
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": serde_json::to_value(&template["metadata"]).unwrap(),
        "spec": serde_json::to_value(&template["spec"]).unwrap(),
    }))
    .unwrap();
    assert_eq!(vllm_scaling_kube::exporter_kind(&pod), Some(vllm_scaling_kube::ExporterKind::GpuExporter));
    assert_eq!(vllm_scaling_kube::exporter_port(&pod), 9400);
    let listen = template["spec"]["containers"][0]["args"].as_sequence().unwrap();
    assert!(listen.iter().any(|a| a.as_str() == Some("--listen=0.0.0.0:9400")));

    let chart = read("deploy/helm/vllm-autoscaler/templates/gpu-exporter.yaml");
    assert!(chart.starts_with("{{- if .Values.gpuExporter.enabled }}"), "the DaemonSet is behind gpuExporter.enabled");
    let pod_labels = chart.split("  template:\n    metadata:\n      labels:\n").nth(1).unwrap();
    assert!(
        pod_labels.lines().next().unwrap().trim()
            == format!("app.kubernetes.io/name: {}", vllm_scaling_kube::GPU_EXPORTER_NAME),
        "the chart's exporter pods carry the label the controller selects: {pod_labels}"
    );
    assert!(chart.contains("- name: metrics\n              containerPort: {{ .Values.gpuExporter.port }}"));
    let values: Value = serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/values.yaml")).unwrap();
    assert_eq!(values["gpuExporter"]["enabled"], Value::Bool(true), "installed by default");
    assert_eq!(values["gpuExporter"]["port"].as_u64(), Some(u64::from(vllm_scaling_kube::DEFAULT_EXPORTER_PORT)));
}

/// Logs are JSON in deploy/ and the chart; the chart's notes print no placeholder and the
/// CRD upgrade step.
#[test]
fn deployments_log_json_and_the_notes_are_complete() {
    let controller = find(&documents("deploy/controller/deployment.yaml"), "Deployment").clone();
    let args = controller["spec"]["template"]["spec"]["containers"][0]["args"].as_sequence().unwrap().clone();
    assert!(args.iter().any(|a| a.as_str() == Some("--log-format=json")), "{args:?}");
    let exporter = find(&documents("deploy/gpu-exporter/daemonset.yaml"), "DaemonSet").clone();
    let args = exporter["spec"]["template"]["spec"]["containers"][0]["args"].as_sequence().unwrap().clone();
    assert!(args.iter().any(|a| a.as_str() == Some("--log-format=json")), "{args:?}");
    let values: Value = serde_yaml_ng::from_str(&read("deploy/helm/vllm-autoscaler/values.yaml")).unwrap();
    assert_eq!(values["logFormat"].as_str(), Some("json"));
    for template in ["controller.yaml", "gpu-exporter.yaml", "keda-scaler.yaml"] {
        let text = read(&format!("deploy/helm/vllm-autoscaler/templates/{template}"));
        assert!(text.contains("- --log-format={{ .Values.logFormat }}"), "{template}");
    }
    let notes = read("deploy/helm/vllm-autoscaler/templates/NOTES.txt");
    let prose = notes.replace("<<'POLICY'", "");
    for placeholder in ["…", "...", "<", "TODO", "example.com"] {
        assert!(!prose.contains(placeholder), "NOTES.txt has a placeholder `{placeholder}`");
    }
    assert!(notes.contains("kubectl apply --server-side --force-conflicts -f"), "the CRD upgrade step");
    // The policy the notes apply is the seed's example.
    let inline: String = notes
        .split("<<'POLICY'\n")
        .nth(1)
        .and_then(|s| s.split("  POLICY\n").next())
        .unwrap()
        .lines()
        .map(|l| l.strip_prefix("  ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let inline: Value = serde_yaml_ng::from_str(&inline).unwrap();
    assert_eq!(inline, documents("deploy/examples/example-policy.yaml")[0]);
}

/// The image (no Docker here, so read, not built): a non-root distroless final stage with
/// only the binary, a stripped `--locked` build, and a build context that keeps what the
/// build needs (every workspace member, the files compiled in) and drops the rest.
#[test]
fn the_image_is_distroless_non_root_and_its_context_has_what_the_build_needs() {
    let dockerfile = read("deploy/Dockerfile");
    let stages: Vec<&str> = dockerfile.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert_eq!(stages[1], "FROM gcr.io/distroless/cc-debian12:nonroot");
    let last = dockerfile.split(stages[1]).nth(1).unwrap();
    assert!(last.contains("USER 65532:65532") && !last.contains("RUN "), "the final stage runs nothing as root");
    assert!(last.contains("ENTRYPOINT [\"/usr/local/bin/vllm-autoscaler\"]"));
    assert!(dockerfile.contains("CARGO_PROFILE_RELEASE_STRIP=symbols") && dockerfile.contains("--locked"));
    // Both Deployments run as the image's user.
    for (path, kind) in
        [("deploy/controller/deployment.yaml", "Deployment"), ("deploy/gpu-exporter/daemonset.yaml", "DaemonSet")]
    {
        let obj = find(&documents(path), kind).clone();
        assert_eq!(obj["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(), Some(65532), "{path}");
    }

    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/').to_owned())
        .collect();
    let is_ignored = |path: &str| {
        ignored.iter().any(|p| {
            let first = path.split('/').next().unwrap();
            p == path
                || p == first
                || (p.ends_with('*') && first.starts_with(p.trim_end_matches('*')))
                || p.strip_prefix("**/*").is_some_and(|ext| path.ends_with(ext))
        })
    };
    for needed in ["target", ".cargo", ".git", "fuzz"] {
        assert!(is_ignored(needed), "{needed} is sent to the image build");
    }
    let members = workspace_members(&read("Cargo.toml"));
    assert!(members.len() >= 5, "{members:?}");
    let mut needed: Vec<String> = members.iter().map(|m| format!("{m}/Cargo.toml")).collect();
    needed.extend(["Cargo.toml", "Cargo.lock"].map(String::from));
    // Files compiled into the binary.
    for dir in [
        "vllm-scaling-core/src",
        "vllm-scaling-prom/src",
        "vllm-scaling-kube/src",
        "vllm-scaling-nvml/src",
        "examples/src",
    ] {
        for file in walk(&repo(dir)) {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            for (at, _) in text.match_indices("include_") {
                let rest = &text[at..];
                let Some(arg) = rest.strip_prefix("include_str!(\"").or_else(|| rest.strip_prefix("include_bytes!(\""))
                else {
                    continue;
                };
                let rel = &arg[..arg.find('"').unwrap()];
                let full = file.parent().unwrap().join(rel).canonicalize().unwrap();
                let root = repo("").canonicalize().unwrap();
                needed.push(full.strip_prefix(&root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    assert!(needed.iter().any(|n| n.starts_with("profiles/")), "{needed:?}");
    for path in &needed {
        assert!(!is_ignored(path), "{path} is needed by the build but .dockerignore drops it");
        assert!(repo(path).exists(), "{path}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The workspace members, read from the root manifest's `members = [...]` list.
fn workspace_members(manifest: &str) -> Vec<String> {
    let list = manifest.split("members = [").nth(1).and_then(|s| s.split(']').next()).unwrap();
    list.split(',').map(|m| m.trim().trim_matches('"').to_owned()).filter(|m| !m.is_empty()).collect()
}
