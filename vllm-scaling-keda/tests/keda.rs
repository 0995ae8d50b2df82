//! KEDA, played by a gRPC client over TLS, against the scaler fed by real vLLM emulators
//! on loopback (and a real Prometheus for the router's queue, the signal that exists at
//! zero replicas): at every step of a load script, the core's own HPA engine, configured
//! as KEDA configures its HPA, lands on the engine's decision, through scale to zero and
//! back.

mod common;

use std::time::Duration;

use common::{Cluster, NS, POLICY, metrics_request, named_metadata, reference, scaled_object};
use serde_json::json;
use tonic::Code;
use vllm_scaling_core::{CurrentScale, Engine, EngineConfig, ScalingMetrics, Timestamp, parse_policy};
use vllm_scaling_keda::proto::{IsActiveResponse, ScaledObjectRef};
use vllm_scaling_keda::{METRIC_NAME, TARGET};
use vllm_scaling_kube::Outcome;

/// The HPA KEDA creates for the ScaledObject: one External metric with an AverageValue
/// target (`GetMetricSpec`'s), `minReplicas` max(1, minReplicaCount), and the behavior the
/// ScaledObject gives (`deploy/keda/scaledobject.yaml`'s when `recommended`, else none:
/// the HPA's defaults, with the controller's 10 % tolerance).
fn keda_hpa(target: f64, max: usize, recommended: bool) -> Engine {
    let behavior = if recommended {
        "  tolerance: 0
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      selectPolicy: Max
      policies: [{type: Percent, value: 10000, periodSeconds: 1}, {type: Pods, value: 10000, periodSeconds: 1}]
    scaleDown:
      stabilizationWindowSeconds: 0
      policies: [{type: Percent, value: 100, periodSeconds: 1}]
"
    } else {
        ""
    };
    let yaml = format!(
        "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata: {{name: keda-hpa}}
spec:
  minReplicas: 1
  maxReplicas: {max}
  scalingRules:
    - {{name: keda, metric: custom, query: 's0-{METRIC_NAME}', targetType: AverageValue, threshold: {target}}}
{behavior}"
    );
    let (_, resolved) = parse_policy(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Engine::with_config(resolved, EngineConfig::default())
}

/// What KEDA's HPA decides on a `GetMetrics` answer.
fn hpa_decides(hpa: &mut Engine, now: Timestamp, replicas: i32, value: f64) -> i32 {
    let metrics = ScalingMetrics { fleet: [("keda".to_owned(), value)].into(), ..ScalingMetrics::default() };
    hpa.evaluate(now, CurrentScale { replicas, status_replicas: Some(replicas) }, &metrics).desired_replicas
}

async fn next_activity(stream: &mut tonic::Streaming<IsActiveResponse>) -> bool {
    tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("StreamIsActive pushes within 5 s")
        .expect("the stream stays open")
        .expect("a message")
        .result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keda_with_the_hpa_lands_on_the_engines_decision_at_every_step() {
    let Some(mut c) = Cluster::start(1, true).await else { return };
    c.server.apply(scaled_object(json!({"scalerAddress": "vllm-keda-scaler:9443", "policy": POLICY})));
    c.apply_policy(common::policy_spec()).await;

    // KEDA's first calls: the metric spec, and the push stream it keeps open.
    let spec = c.client.get_metric_spec(reference(named_metadata())).await.expect("GetMetricSpec").into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].metric_name, METRIC_NAME);
    assert!((spec.metric_specs[0].target_size_float - TARGET).abs() < f64::EPSILON);
    let mut hpa = keda_hpa(spec.metric_specs[0].target_size_float, common::MAX_PODS, true);
    let mut stream = c.client.stream_is_active(reference(named_metadata())).await.expect("stream").into_inner();

    // (total queue over the pods, router queue, seconds since the previous step)
    let script: &[(f64, f64, u64)] = &[
        (2.0, 1.0, 15),  // light: 1 replica
        (14.0, 1.0, 15), // 14 waiting: ceil(14 / 5) = 3
        (14.0, 1.0, 15), // held
        (26.0, 2.0, 15), // 26: 6 (capped at maxReplicas)
        (26.0, 2.0, 15),
        (8.0, 1.0, 15), // less: the policy's 30 s window holds, then 2 pods per 15 s
        (8.0, 1.0, 15),
        (8.0, 1.0, 15),
        (8.0, 1.0, 15),
        (0.0, 0.0, 15), // idle
        (0.0, 0.0, 15),
        (0.0, 0.0, 15),
        (0.0, 0.0, 15),
        (0.0, 0.0, 15),
        (0.0, 0.0, 15), // a minute idle: scale to zero
        (0.0, 0.0, 15),
        (0.0, 7.0, 15), // requests at the router: activation, and 2 replicas
        (12.0, 7.0, 15),
        (12.0, 7.0, 15),
    ];
    let mut trajectory = Vec::new();
    let mut active = None;
    let mut went_to_zero = false;
    let mut came_back = false;
    for (i, &(total, router, secs)) in script.iter().enumerate() {
        c.set_load(total, router);
        c.router_seen(router).await;
        c.clock.advance(Duration::from_secs(secs));
        let outcome = c.evaluate().await;
        let Outcome::Decided(decision) = outcome else { panic!("step {i}: no decision: {outcome:?}") };
        let now = c.clock_now();
        let current = c.replicas();
        assert_eq!(decision.current_replicas, current, "step {i}");

        // KEDA's operator: activity from IsActive (and the stream, when it changed).
        let is_active = c.client.is_active(reference(named_metadata())).await.expect("IsActive").into_inner().result;
        assert_eq!(is_active, decision.desired_replicas > 0, "step {i}: IsActive");
        if active != Some(is_active) {
            assert_eq!(next_activity(&mut stream).await, is_active, "step {i}: the stream pushes the change");
            active = Some(is_active);
        }
        let hpa_step = async |c: &mut Cluster, hpa: &mut vllm_scaling_core::Engine, replicas: i32| {
            let value = c.client.get_metrics(metrics_request(named_metadata())).await.expect("GetMetrics").into_inner();
            let value = value.metric_values[0].metric_value_float;
            assert!((value - f64::from(decision.desired_replicas) * TARGET).abs() < 1e-9, "step {i}: desired x target");
            let to = hpa_decides(hpa, now, replicas, value);
            assert_eq!(to, decision.desired_replicas, "step {i}: the HPA applies the engine's decision");
            c.set_pods(usize::try_from(to).unwrap());
            to
        };
        let applied = if current == 0 {
            if is_active {
                // KEDA activates to one replica; its HPA takes over at its next sync (at
                // most 15 s later; here at once) with the decision made at zero.
                c.set_pods(1);
                came_back = true;
                hpa_step(&mut c, &mut hpa, 1).await
            } else {
                0
            }
        } else if !is_active {
            // cooldownPeriod: 0 — KEDA takes the target to zero.
            c.set_pods(0);
            went_to_zero = true;
            0
        } else {
            hpa_step(&mut c, &mut hpa, current).await
        };
        trajectory.push((current, decision.desired_replicas, applied));
    }
    eprintln!("(current, engine's desired, applied) per step: {trajectory:?}");
    assert!(went_to_zero && came_back, "the script goes to zero and back: {trajectory:?}");
    let peak = trajectory.iter().map(|t| t.2).max().unwrap();
    assert_eq!(peak, 6, "the burst reaches maxReplicas: {trajectory:?}");
    let status = c.server.get("autoscaler.production-stack/v1alpha1", "vLLMScalingPolicy", NS, POLICY).unwrap();
    assert!(status["status"]["history"].is_object(), "the scaler keeps the policy's status history");
    assert!(
        c.server.requests().iter().all(|r| !(r.method == "PATCH" && r.path.ends_with("/scale"))),
        "the scaler never writes /scale: KEDA's HPA does"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_and_missing_metrics_are_clear_errors_never_a_scale_down() {
    let Some(mut c) = Cluster::start(2, false).await else { return };
    c.server.apply(scaled_object(json!({"policy": POLICY})));
    let mut spec = common::policy_spec();
    // Without Prometheus the router rule is missing: only the pods' queue.
    spec["scalingRules"] = json!([{"metric": "queue_length", "threshold": 5, "source": "pods"}]);
    spec["minReplicas"] = json!(1);
    spec.as_object_mut().unwrap().remove("scaleToZero");
    c.apply_policy(spec).await;
    c.set_load(4.0, 0.0);
    let Outcome::Decided(first) = c.step(0).await else { panic!("no first decision") };
    assert_eq!(first.current_replicas, 2);

    // Unknown policy.
    let mut unknown = named_metadata();
    unknown.insert("policy".into(), "nope".into());
    let err = c.client.get_metrics(metrics_request(unknown)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("vLLMScalingPolicy default/nope not found"), "{}", err.message());

    // Malformed metadata: an unknown key, no policy, a bad inline spec.
    let mut typo = named_metadata();
    typo.insert("polcy".into(), "x".into());
    let err = c.client.is_active(reference(typo)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`polcy`") && err.message().contains("did you mean `policy`"), "{}", err.message());
    let err = c.client.get_metric_spec(reference(Default::default())).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("names no policy"), "{}", err.message());
    let bad_inline =
        [("policySpec".to_owned(), "maxReplicas: 3\nscalingRules: [{metric: queue_length, threshold: -1}]".to_owned())]
            .into_iter()
            .collect();
    let err = c.client.get_metric_spec(reference(bad_inline)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("policySpec") && err.message().contains("threshold"), "{}", err.message());
    let mut wrong_metric = metrics_request(named_metadata());
    wrong_metric.metric_name = "s0-cpu".into();
    let err = c.client.get_metrics(wrong_metric).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("s0-cpu"), "{}", err.message());

    // Metrics down: every pod stops answering. GetMetrics is an error (the HPA holds),
    // never a value under the current count; IsActive stays true so KEDA does not take the
    // target to zero.
    for e in &c.pods {
        e.control(vllm_scaling_prom::emulator::ControlUpdate {
            fault: Some(vllm_scaling_prom::emulator::Fault::ServerError),
            ..Default::default()
        })
        .unwrap();
    }
    let Outcome::Decided(held) = c.step(15).await else { panic!("no decision") };
    assert!(held.no_valid_metric, "{held:?}");
    assert_eq!(held.desired_replicas, 2, "held");
    let err = c.client.get_metrics(metrics_request(named_metadata())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("for want of metrics"), "{}", err.message());
    assert!(c.client.is_active(reference(named_metadata())).await.unwrap().into_inner().result);

    // A stale decision is not answered either.
    c.clock.advance(Duration::from_secs(600));
    let err = c.client.get_metrics(metrics_request(named_metadata())).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inline_policy_takes_its_target_from_the_scaled_object() {
    let Some(mut c) = Cluster::start(1, false).await else { return };
    let text = "maxReplicas: 5\nscalingRules:\n  - {metric: queue_length, threshold: 5, source: pods}\n";
    c.server.apply(scaled_object(json!({"policySpec": text})));
    let metadata: std::collections::HashMap<String, String> =
        [("policySpec".to_owned(), text.to_owned())].into_iter().collect();
    c.set_load(18.0, 0.0);
    // The first call evaluates it: ceil(18 / 5) = 4.
    let got = c.client.get_metrics(metrics_request(metadata.clone())).await.expect("GetMetrics").into_inner();
    assert!((got.metric_values[0].metric_value_float - 4.0).abs() < 1e-9, "{got:?}");
    let ScaledObjectRef { .. } = reference(metadata.clone());
    assert!(c.client.is_active(reference(metadata)).await.unwrap().into_inner().result);
    // No object, so no status write and no event for it.
    assert!(
        c.server
            .requests()
            .iter()
            .all(|r| !r.path.contains("vllmscalingpolicies") || r.method == "GET" || r.is_watch()),
        "an inline policy writes nothing"
    );
}

/// The residual differences with KEDA's defaults, pinned: what the HPA layer changes when
/// the ScaledObject does not set the recommended behavior.
#[test]
fn with_keda_defaults_the_hpa_holds_changes_within_its_tolerance_and_its_window() {
    let t0 = Timestamp::from_millis(common::T0_MS);
    let mut defaults = keda_hpa(TARGET, 100, false);
    // 10 -> 11 (+10 %) is inside the default 10 % tolerance: held at 10.
    assert_eq!(hpa_decides(&mut defaults, t0, 10, 11.0), 10);
    // 10 -> 12 is outside: applied.
    assert_eq!(hpa_decides(&mut defaults, t0.saturating_add(Duration::from_secs(15)), 10, 12.0), 12);
    // A drop to 6 is held by the HPA's own 300 s window on top of the policy's.
    assert_eq!(hpa_decides(&mut defaults, t0.saturating_add(Duration::from_secs(30)), 12, 6.0), 12);
    // The recommended behavior applies all three at once.
    let mut recommended = keda_hpa(TARGET, 100, true);
    assert_eq!(hpa_decides(&mut recommended, t0, 10, 11.0), 11);
    assert_eq!(hpa_decides(&mut recommended, t0.saturating_add(Duration::from_secs(15)), 11, 6.0), 6);
}

/// `vllm-autoscaler run` (a controller that writes `/scale`) leaves a policy a
/// ScaledObject drives to the scaler: no `/scale` write and no status write, so the two
/// never write the same object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scale_writing_controller_leaves_keda_driven_policies_alone() {
    let Some(c) = Cluster::start(1, false).await else { return };
    c.server.apply(scaled_object(json!({"policy": POLICY})));
    c.apply_policy(common::policy_spec()).await;
    c.set_load(40.0, 0.0);
    let run_ctx = std::sync::Arc::new(
        vllm_scaling_kube::Context::new(
            c.server.client(),
            vllm_scaling_prom::VllmMetrics::pods(
                vllm_scaling_prom::PodScraper::new(vllm_scaling_prom::PodScrapeOptions::default()).unwrap(),
            ),
            vllm_scaling_kube::ControllerConfig::default(),
        )
        .without_gpu_exporters(),
    );
    c.server.clear_requests();
    let api: kube::Api<vllm_scaling_kube::VllmScalingPolicyResource> = kube::Api::namespaced(c.server.client(), NS);
    let policy = std::sync::Arc::new(api.get(POLICY).await.unwrap());
    vllm_scaling_kube::reconcile(policy, run_ctx).await.unwrap();
    let writes: Vec<_> = c.server.requests().into_iter().filter(|r| r.method != "GET" && !r.is_watch()).collect();
    assert!(writes.is_empty(), "the scale-writing controller wrote {writes:?}");
    assert_eq!(c.replicas(), 1);
}

/// `--tls-client-ca-file`: a client without a certificate that CA signed is refused at
/// the handshake; KEDA's `tlsClientCert`/`tlsClientKey` get through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = common::certificates();
    let (client_ca, client_cert, client_key) = common::certificates();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let files = vllm_scaling_keda::TlsFiles {
        cert: write("tls.crt", &cert),
        key: write("tls.key", &key),
        client_ca: Some(write("client-ca.crt", &client_ca)),
    };
    let tls = files.load().expect("the files load");
    let missing = vllm_scaling_keda::TlsFiles { cert: dir.path().join("nope.crt"), ..files.clone() };
    let err = missing.load().unwrap_err().to_string();
    assert!(err.contains("nope.crt"), "{err}");

    let server = vllm_scaling_kube::fake_api::FakeApiServer::start().await.unwrap();
    let ctx = std::sync::Arc::new(
        vllm_scaling_kube::Context::new(
            server.client(),
            vllm_scaling_core::InMemoryMetrics::default(),
            vllm_scaling_kube::ControllerConfig::default(),
        )
        .publishing_to(std::sync::Arc::new(vllm_scaling_kube::DecisionBoard::new())),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(vllm_scaling_keda::serve(
        listener,
        vllm_scaling_keda::KedaScaler::new(ctx),
        Some(tls),
        std::future::pending(),
    ));
    let url = format!("https://localhost:{port}");
    let base = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&ca)).domain_name("localhost");
    // Without a client certificate: the handshake (or the first call) fails.
    // Under TLS 1.3 the client may finish its side of the handshake before the server
    // refuses it, so the refusal can surface as any transport status (Unavailable,
    // Unknown, Internal, Cancelled...). What must not happen is an answer from the
    // service itself, which (no policy is listed yet) would name vLLMScalingPolicies.
    let anonymous = match Channel::from_shared(url.clone()).unwrap().tls_config(base.clone()).unwrap().connect().await {
        Err(e) => Err(e.to_string()),
        Ok(channel) => vllm_scaling_keda::proto::external_scaler_client::ExternalScalerClient::new(channel)
            .get_metric_spec(reference(named_metadata()))
            .await
            .map(|answer| format!("{answer:?}"))
            .map_err(|e| format!("{e:?}")),
    };
    match anonymous {
        Ok(answer) => panic!("a client without a certificate got an answer: {answer}"),
        Err(e) => {
            assert!(!e.contains("vLLMScalingPolicies"), "a client without a certificate reached the service: {e}")
        }
    }
    // With one the client CA signed: through to the service (which answers that no
    // policy is listed yet, an application error, not a TLS one).
    let with_cert = base.identity(Identity::from_pem(&client_cert, &client_key));
    let channel = Channel::from_shared(url).unwrap().tls_config(with_cert).unwrap().connect().await.expect("mTLS");
    let err = vllm_scaling_keda::proto::external_scaler_client::ExternalScalerClient::new(channel)
        .get_metric_spec(reference(named_metadata()))
        .await
        .unwrap_err();
    assert!(err.message().contains("vLLMScalingPolicies"), "{err:?}");
}
