//! The exposition parser against real exporter output (../shared/fixtures) and against the
//! synthetic pages committed in tests/data.

mod common;

use vllm_scaling_prom::exposition::{MetricType, parse};

#[test]
fn vllm_v0_datadog_fixture() {
    let Some(text) = common::shared_fixture("vllm/vllm-v0.5-datadog.prom") else { return };
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}"));
    assert!(e.len() >= 100, "{} samples", e.len());
    let waiting: Vec<_> = e.samples_named("vllm:num_requests_waiting").collect();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].label("model_name"), Some("facebook/opt-125m"));
    assert_eq!(e.metric_type("vllm:time_to_first_token_seconds"), Some(MetricType::Histogram));
    let inf = e
        .samples_named("vllm:time_to_first_token_seconds_bucket")
        .find(|s| s.label("le") == Some("+Inf"))
        .expect("an +Inf bucket");
    let count = e.samples_named("vllm:time_to_first_token_seconds_count").next().expect("a _count");
    assert_eq!(inf.value, count.value);
    let start = e.samples_named("process_start_time_seconds").next().unwrap();
    assert_eq!(start.value, 1.7181405583e9);
}

#[test]
fn vllm_v1_design_doc_fixture_without_inf_bucket() {
    let Some(text) = common::shared_fixture("vllm/vllm-v1-vllm-design-doc-abridged.prom") else { return };
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}"));
    let reasons: Vec<_> =
        e.samples_named("vllm:request_success_total").filter_map(|s| s.label("finished_reason")).collect();
    assert_eq!(reasons, ["stop", "length", "abort"]);
    assert!(e.samples_named("vllm:time_to_first_token_seconds_bucket").all(|s| s.label("le") != Some("+Inf")));
}

#[test]
fn dcgm_fixture() {
    let Some(text) = common::shared_fixture("dcgm/dcgm-exporter-datadog.prom") else { return };
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}"));
    let util = e.samples_named("DCGM_FI_DEV_GPU_UTIL").next().expect("GPU_UTIL");
    assert_eq!(util.label("modelName"), Some("Tesla T4"));
    assert!(util.label("Hostname").is_some());
    let power = e.samples_named("DCGM_FI_DEV_POWER_USAGE").next().expect("POWER_USAGE");
    assert!(power.value > 0.0);
    let dram = e.samples_named("DCGM_FI_PROF_DRAM_ACTIVE").find(|s| s.label("pod").is_some()).expect("pod-attributed");
    assert_eq!(dram.label("namespace"), Some("ray-llm"));
    assert_eq!(e.help("DCGM_FI_DEV_COUNT"), Some("Number of Devices on the node."));
}

#[test]
fn every_fixture_line_that_is_not_a_comment_is_a_sample() {
    for rel in
        ["vllm/vllm-v0.5-datadog.prom", "vllm/vllm-v1-vllm-design-doc-abridged.prom", "dcgm/dcgm-exporter-datadog.prom"]
    {
        let Some(text) = common::shared_fixture(rel) else { return };
        let e = parse(&text).unwrap();
        let lines = text.lines().filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#')).count();
        assert_eq!(e.len(), lines, "{rel}");
    }
}

#[test]
fn synthetic_v1_page_with_engines_and_created_series() {
    let text = common::data("vllm-v1-engines.prom");
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}"));
    let waiting: f64 = e.samples_named("vllm:num_requests_waiting").map(|s| s.value).sum();
    assert_eq!(waiting, 4.0);
    let engines: Vec<_> = e.samples_named("vllm:kv_cache_usage_perc").filter_map(|s| s.label("engine")).collect();
    assert_eq!(engines, ["0", "1"]);
    assert_eq!(e.metric_type("vllm:gpu_prefix_cache_queries_created"), Some(MetricType::Gauge));
    assert!(e.help("vllm:gpu_prefix_cache_queries_total").unwrap().contains("DEPRECATED"));
    assert_eq!(e.samples_named("vllm:time_to_first_token_seconds_bucket").count(), 8);
}

#[test]
fn synthetic_openmetrics_page() {
    let text = common::data("openmetrics.prom");
    let e = parse(&text).unwrap_or_else(|err| panic!("{err}"));
    assert!(e.has_eof());
    assert_eq!(e.metric_type("build"), Some(MetricType::Info));
    assert_eq!(e.metric_type("feature_state"), Some(MetricType::StateSet));
    assert_eq!(e.help("request_latency_seconds"), Some("Latency of requests, with \"quotes\" and a \\ backslash."));
    let info = e.samples_named("build_info").next().unwrap();
    assert_eq!(info.label("revision"), Some("abc \"quoted\" \\ \n"));
    let temp: Vec<_> = e.samples_named("temperature_celsius").collect();
    assert_eq!(temp[0].timestamp, Some(1_520_879_607.5));
    assert!(temp[1].value.is_nan());
    assert_eq!(e.samples_named("request_latency_seconds_bucket").count(), 3);
}

#[test]
fn truncating_a_valid_page_mid_line_never_panics() {
    let text = common::data("vllm-v1-engines.prom");
    for cut in (0..text.len()).filter(|&i| text.is_char_boundary(i)) {
        let _ = parse(&text[..cut]);
    }
}
