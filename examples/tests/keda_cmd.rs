//! `vllm-autoscaler keda-scaler` as a user runs it: a kubeconfig pointing at the
//! in-process API server, the seed policy and `deploy/keda/scaledobject.yaml`'s
//! ScaledObject, a pod served by the vLLM emulator, KEDA's calls over gRPC, and SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use vllm_scaling_keda::proto::external_scaler_client::ExternalScalerClient;
use vllm_scaling_keda::proto::{GetMetricsRequest, ScaledObjectRef};
use vllm_scaling_kube::fake_api::{FakeApiServer, keda_scaled_object_kind};

mod common;

use common::{kubeconfig, seed_cluster};

fn yaml_documents(path: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(format!("{}/../{path}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <serde_json::Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn keda_scaler_refuses_flags_that_do_not_apply_and_plaintext_by_default() {
    let bin = env!("CARGO_BIN_EXE_vllm-autoscaler");
    let out = Command::new(bin).args(["keda-scaler", "--insecure-no-tls", "--leader-elect"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--leader-elect is not supported"));
    let out = Command::new(bin).args(["keda-scaler", "--insecure-no-tls", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // No TLS files and no explicit --insecure-no-tls: refused.
    let out = Command::new(bin).args(["keda-scaler", "--listen", "127.0.0.1:0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn keda_scaler_answers_keda_for_the_seed_and_stops_on_sigterm() {
    let server = FakeApiServer::start().await.unwrap();
    server.add_kind(keda_scaled_object_kind());
    let _emulator = seed_cluster(&server).await;
    let so = yaml_documents("deploy/keda/scaledobject.yaml")
        .into_iter()
        .find(|d| d["kind"] == "ScaledObject")
        .expect("the example ScaledObject");
    let metadata: std::collections::HashMap<String, String> =
        serde_json::from_value(so["spec"]["triggers"][0]["metadata"].clone()).unwrap();
    server.apply(so.clone());

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), &server.url());
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"))
        .args(["keda-scaler", "--insecure-no-tls", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--sync-period", "1s", "--metrics-addr", "127.0.0.1:0"])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let reference = ScaledObjectRef {
        name: so["metadata"]["name"].as_str().unwrap().to_owned(),
        namespace: "default".to_owned(),
        scaler_metadata: metadata,
    };
    // KEDA asks until the scaler has decided: 30 waiting against 10 on one replica.
    let mut answer = None;
    for _ in 0..200 {
        let endpoint = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}")).unwrap();
        if let Ok(channel) = endpoint.connect().await {
            let mut client = ExternalScalerClient::new(channel);
            let request = GetMetricsRequest {
                scaled_object_ref: Some(reference.clone()),
                metric_name: "s0-vllm-desired-replicas".into(),
            };
            if let Ok(r) = client.get_metrics(request).await {
                answer = Some(r.into_inner().metric_values[0].metric_value_float);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "keda-scaler did not stop within 10 s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut logs = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
    let answer = answer.unwrap_or_else(|| panic!("GetMetrics never answered\n{logs}"));
    assert!((answer - 3.0).abs() < 1e-9, "ceil(30 / 10) = 3 replicas, answered {answer}\n{logs}");
    assert!(status.success(), "exit {status:?}\n{logs}");
    assert!(server.requests().iter().all(|r| !(r.method == "PATCH" && r.path.ends_with("/scale"))), "never /scale");
}
