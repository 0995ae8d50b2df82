//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

/// `../shared/fixtures/<rel>` relative to the repository root, read as text.
///
/// Returns `None` (and says so) when the shared data is absent outside CI; with `CI=true`
/// a missing file fails the test, so CI never passes by skipping.
pub fn shared_fixture(rel: &str) -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures").join(rel);
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) => {
            let msg = format!(
                "shared fixture {} is unreadable ({e}); the tests read ../shared/fixtures next to the repository",
                path.display()
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{msg}");
            }
            eprintln!("skipping: {msg}");
            None
        }
    }
}

/// A file under this crate's `tests/data/`.
pub fn data(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A plain HTTP client for tests (rustls on ring, as the crate builds its own).
pub fn http_client() -> reqwest::Client {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The rules of a policy written inline.
pub fn rules(rules_yaml: &str) -> Vec<vllm_scaling_core::ResolvedRule> {
    policy(rules_yaml).rules
}

/// A policy (maxReplicas 10) with the given `scalingRules` YAML list items.
pub fn policy(rules_yaml: &str) -> vllm_scaling_core::ResolvedPolicy {
    let text = format!(
        "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {{name: test}}\nspec:\n  minReplicas: 1\n  maxReplicas: 10\n  scalingRules:\n{rules_yaml}"
    );
    vllm_scaling_core::parse_policy(&text).unwrap_or_else(|e| panic!("{e}\n{text}")).1
}

/// A running, ready pod with a metrics URL.
pub fn pod(name: &str, url: &str) -> vllm_scaling_core::PodInfo {
    vllm_scaling_core::PodInfo {
        name: name.to_owned(),
        phase: vllm_scaling_core::PodPhase::Running,
        ready: true,
        deleting: false,
        metrics_url: Some(url.to_owned()),
        metrics_url_error: None,
    }
}

/// Milliseconds since the Unix epoch, as drivers pass `now`.
pub fn now() -> vllm_scaling_core::Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    vllm_scaling_core::Timestamp::from_millis(u64::try_from(ms).unwrap())
}

/// The upper bound of the V1 TTFT bucket that holds `ms`, and the one below it, in ms.
pub fn ttft_bucket(ms: f64) -> (f64, f64) {
    const B: &[f64] =
        &[1.0, 5.0, 10.0, 20.0, 40.0, 60.0, 80.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0, 10000.0];
    let i = B.iter().position(|&b| ms <= b).unwrap();
    (if i == 0 { 0.0 } else { B[i - 1] }, B[i])
}
