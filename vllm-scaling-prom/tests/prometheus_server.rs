//! The test harness itself: a real Prometheus scraping the emulator.

use std::time::Duration;

use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions};
use vllm_scaling_prom::test_util::{PrometheusConfig, PrometheusServer, ScrapeTarget, promtool, require};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_emulator_and_stops() {
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default()).await.unwrap();
    emulator.control(ControlUpdate { queue_length: Some(Some(6.0)), ..Default::default() }).unwrap();
    let target = ScrapeTarget::new(emulator.addr().to_string()).label("pod", "vllm-0").label("namespace", "test");
    let Some(mut prometheus) = require(PrometheusServer::start(&[target], Duration::from_millis(250)).await) else {
        return;
    };
    let series = prometheus.wait_for("vllm:num_requests_waiting", Duration::from_secs(20)).await.unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(series[0].1, 6.0);
    assert_eq!(series[0].0["pod"], "vllm-0");
    assert_eq!(series[0].0["engine"], "0");
    assert!(prometheus.dir().join("prometheus.yml").is_file());
    assert!(prometheus.is_running());
    let url = prometheus.url();
    prometheus.stop();
    assert!(!prometheus.is_running());
    assert!(prometheus.query("up").await.is_err(), "{url} still answers after stop()");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_files_are_loaded() {
    let rules = "groups:\n  - name: t\n    rules:\n      - record: test:one\n        expr: vector(1)\n";
    let config = PrometheusConfig {
        scrape_interval: Duration::from_millis(250),
        rule_files: vec![rules.to_owned()],
        ..PrometheusConfig::default()
    };
    let Some(prometheus) = require(PrometheusServer::start_with(config).await) else { return };
    let r = prometheus.wait_for("test:one", Duration::from_secs(20)).await.unwrap();
    assert_eq!(r[0].1, 1.0);
    let promtool = promtool().expect("promtool comes with prometheus");
    assert!(promtool.is_file());
}

#[tokio::test]
async fn a_bad_config_reports_the_log() {
    let config = PrometheusConfig {
        scrape_interval: Duration::from_secs(1),
        rule_files: vec!["groups: [this is not a rule group".to_owned()],
        ..PrometheusConfig::default()
    };
    if vllm_scaling_prom::test_util::prometheus_binary().is_err() {
        require::<()>(Err(vllm_scaling_prom::test_util::TestServerError::NotInstalled { binary: "prometheus" }));
        return;
    }
    let err = PrometheusServer::start_with(config).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("exited before it was ready"), "{text}");
    assert!(text.contains("rules-0.yml"), "{text}");
}
