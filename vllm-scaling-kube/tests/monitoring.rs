//! The monitoring that ships in `deploy/`: the PrometheusRule and the Grafana dashboard
//! are checked by the real `promtool` (Debian's `prometheus` package), the alerts are
//! unit-tested with `promtool test rules`, and every metric they name is one the
//! controller exports.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The promtool binary; a missing one fails the test with how to install it (it never
/// passes by skipping).
fn promtool() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("promtool")).collect::<Vec<_>>())
        .unwrap_or_default();
    candidates.into_iter().chain([PathBuf::from("/usr/bin/promtool")]).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "promtool is not installed: it comes with Debian's prometheus package \
                 (`sudo apt-get install prometheus`; .ci/test.sh installs it). CI={}",
            std::env::var("CI").unwrap_or_default()
        )
    })
}

fn run_promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new(promtool()).args(args).current_dir(dir).output().expect("promtool runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The `spec` of the PrometheusRule: a plain rules file.
fn rules_file() -> String {
    let text = std::fs::read_to_string(repo("deploy/monitoring/prometheusrule.yaml")).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    serde_yaml_ng::to_string(&doc["spec"]).unwrap()
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo("deploy/monitoring/grafana-dashboard.json")).unwrap()).unwrap()
}

/// Every PromQL expression of the dashboard's panels, with Grafana's variables replaced
/// the way Grafana would (`$namespace` as a regex, `$__rate_interval` as a duration).
fn dashboard_exprs() -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard()["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            out.push(expr.replace("$namespace", ".*").replace("$policy", ".*").replace("$__rate_interval", "1m"));
        }
    }
    out
}

#[test]
fn promtool_accepts_the_alert_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules_file()).unwrap();
    let out = run_promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(out.contains("SUCCESS: 6 rules found"), "{out}");
}

#[test]
fn the_alerts_fire_when_they_should() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rules.yaml"), rules_file()).unwrap();
    std::fs::copy(repo("vllm-scaling-kube/tests/data/alerts_test.yaml"), dir.path().join("alerts_test.yaml")).unwrap();
    let out = run_promtool(&["test", "rules", "alerts_test.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_accepts_the_dashboard_queries() {
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 15, "{exprs:?}");
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": e}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.yaml"), serde_yaml_ng::to_string(&file).unwrap()).unwrap();
    let out = run_promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(out.contains(&format!("SUCCESS: {} rules found", exprs.len())), "{out}");
}

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("vllm_autoscaler_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[tokio::test]
async fn every_metric_the_rules_and_dashboard_name_is_exported() {
    let mut referenced = metric_names(&rules_file());
    referenced.extend(dashboard_exprs().iter().flat_map(|e| metric_names(e)));
    referenced
        .extend(metric_names(&std::fs::read_to_string(repo("vllm-scaling-kube/tests/data/alerts_test.yaml")).unwrap()));
    assert!(referenced.len() >= 12, "{referenced:?}");

    // One real evaluation, so every family has a series.
    let h = Harness::seed().await;
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let exported = h.ctx.telemetry().encode();
    let types: BTreeSet<(String, String)> = exported
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' ').map(|(n, t)| (n.to_owned(), t.to_owned())))
        .collect();
    for name in referenced {
        let found = types.iter().any(|(family, kind)| match kind.as_str() {
            "counter" => name == format!("{family}_total"),
            "histogram" => {
                [format!("{family}_bucket"), format!("{family}_sum"), format!("{family}_count")].contains(&name)
            }
            _ => name == *family,
        });
        assert!(found, "`{name}` is used in deploy/monitoring but the controller does not export it:\n{exported}");
    }
}
