//! The emulator over real HTTP on 127.0.0.1: its page, its control endpoint, its faults.

mod common;

use std::time::Duration;

use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions, Fault, Load};
use vllm_scaling_prom::exposition::parse;

async fn start(options: EmulatorOptions) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), options).await.unwrap()
}

#[tokio::test]
async fn metrics_page_and_control_round_trip() {
    let emulator = start(EmulatorOptions { engines: 2, ..Default::default() }).await;
    let client = common::http_client();
    let resp = client.get(emulator.metrics_url()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
    let page = resp.text().await.unwrap();
    let e = parse(&page).unwrap();
    assert_eq!(e.samples_named("vllm:num_requests_waiting").count(), 2);

    let resp = client
        .post(format!("{}/control", emulator.url()))
        .body(r#"{"queue_length": 9, "kv_cache_usage": 0.8, "request_rate": 3}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let state: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(state["load"]["request_rate"], 3.0);
    assert_eq!(state["served"]["queue_length"], 9.0);

    let page = client.get(emulator.metrics_url()).send().await.unwrap().text().await.unwrap();
    let e = parse(&page).unwrap();
    let waiting: f64 = e.samples_named("vllm:num_requests_waiting").map(|s| s.value).sum();
    assert_eq!(waiting, 9.0);
    assert!(e.samples_named("vllm:kv_cache_usage_perc").all(|s| s.value == 0.8));

    let state: serde_json::Value =
        client.get(format!("{}/control", emulator.url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(state["load"]["queue_length"], 9.0);

    // Bad control input is a 400 that says what is wrong, and changes nothing.
    let resp =
        client.post(format!("{}/control", emulator.url())).body(r#"{"kv_cache_usage": 80}"#).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(resp.text().await.unwrap().contains("0-1 fraction"));
    let resp = client.post(format!("{}/control", emulator.url())).body("rate=3").send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(emulator.state().load.kv_cache_usage, Some(0.8));
    assert_eq!(client.get(format!("{}/other", emulator.url())).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn faults_break_only_the_metrics_page() {
    let emulator = start(EmulatorOptions::default()).await;
    let client = common::http_client();
    let set = |fault| emulator.control(ControlUpdate { fault: Some(fault), ..Default::default() }).unwrap();

    set(Fault::ServerError);
    assert_eq!(client.get(emulator.metrics_url()).send().await.unwrap().status(), 500);

    set(Fault::Garbage);
    let page = client.get(emulator.metrics_url()).send().await.unwrap().text().await.unwrap();
    assert!(parse(&page).is_err());

    set(Fault::Drop);
    assert!(client.get(emulator.metrics_url()).send().await.is_err());

    set(Fault::Hang);
    let hung = client.get(emulator.metrics_url()).timeout(Duration::from_millis(300)).send().await;
    assert!(hung.unwrap_err().is_timeout());

    // The control endpoint still works while /metrics hangs.
    let resp =
        client.post(format!("{}/control", emulator.url())).body(r#"{"fault": {"kind": "none"}}"#).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(client.get(emulator.metrics_url()).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn v0_names_and_load_from_options() {
    let emulator = start(EmulatorOptions {
        v0_names: true,
        load: Load { request_rate: 50.0, ..Load::default() },
        ..Default::default()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let page = common::http_client().get(emulator.metrics_url()).send().await.unwrap().text().await.unwrap();
    let e = parse(&page).unwrap();
    assert!(e.samples_named("vllm:gpu_cache_usage_perc").next().unwrap().value > 0.02);
    assert!(e.samples_named("vllm:time_per_output_token_seconds_count").next().is_some());
    assert!(e.samples().all(|s| s.label("engine").is_none()));
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let emulator = start(EmulatorOptions::default()).await;
    let url = emulator.metrics_url();
    emulator.shutdown().await;
    assert!(common::http_client().get(url).send().await.is_err());
}

#[tokio::test]
async fn bad_options_are_rejected() {
    let err = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions { max_batch: 0.0, ..Default::default() })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_batch"), "{err}");
}
