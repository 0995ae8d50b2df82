//! The cluster `run` and `keda-scaler` are started against in their tests: the in-process
//! API server with one vLLM Deployment whose pod the emulator serves at a queue of 30,
//! the seed policy, and a kubeconfig pointing at it.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};

use serde_json::json;
use vllm_scaling_kube::fake_api::FakeApiServer;
use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions};

pub const MODEL: &str = "meta-llama/Llama-2-70b-hf";

/// Adds Deployment `llama-70b` (1 replica serving [`MODEL`]), its pod (served by the
/// returned emulator, 30 requests waiting) and the seed policy to `server`.
pub async fn seed_cluster(server: &FakeApiServer) -> Emulator {
    let emulator = Emulator::start(
        "127.0.0.1:0".parse().unwrap(),
        EmulatorOptions { model_name: MODEL.into(), ..EmulatorOptions::default() },
    )
    .await
    .unwrap();
    emulator.control(ControlUpdate { queue_length: Some(Some(30.0)), ..ControlUpdate::default() }).unwrap();
    server.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "llama-70b", "namespace": "default"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "llama"}},
                 "template": {"spec": {"containers": [{"name": "vllm", "args": ["--model", MODEL]}]}}},
        "status": {"replicas": 1}
    }));
    server.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "llama-70b-0", "namespace": "default", "labels": {"app": "llama"},
                     "annotations": {"prometheus.io/port": emulator.addr().port().to_string()}},
        "spec": {"containers": [{"name": "vllm"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    }));
    let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples/example-policy.yaml"))
        .unwrap();
    let mut seed: serde_json::Value = serde_yaml_ng::from_str(&seed).unwrap();
    seed["metadata"]["namespace"] = json!("default");
    server.apply(seed);
    emulator
}

/// Writes a kubeconfig for the API server at `url` into `dir`.
pub fn kubeconfig(dir: &Path, url: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {url}\nusers:\n- name: me\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: me\n    namespace: default\ncurrent-context: fake\n"
        ),
    )
    .unwrap();
    path
}
