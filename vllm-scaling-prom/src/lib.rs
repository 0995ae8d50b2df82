//! Metrics for vllm-scaling, read from Prometheus or straight from vLLM pods: the crate
//! that implements the core's [`GetScalingMetrics`](vllm_scaling_core::GetScalingMetrics) port.
//!
//! - [`VllmMetrics`]: the adapter drivers plug in. Each rule is read from the source it
//!   names (`source: pods | prometheus | auto`): [`PodScraper`] GETs every ready pod's
//!   `/metrics` concurrently with a per-pod timeout and computes rates and quantiles from
//!   the difference between two scrapes; [`PrometheusMetrics`] (feature `prometheus`, on by
//!   default) runs the catalog's PromQL ([`promql`]). Missing, stale or broken data comes
//!   back as per-rule failures with reasons, never as a panic or a scale-down.
//! - [`exposition`]: a strict, fast, zero-copy parser for the Prometheus text exposition
//!   format (and OpenMetrics text), used by every crate that reads a `/metrics` page.
//! - [`snapshot`]: the pure arithmetic of direct scrapes (catalog values from a page,
//!   rates and `histogram_quantile` from two pages).
//! - [`emulator`]: a vLLM `/metrics` emulator with a control endpoint, for demos, tests
//!   and benchmarks.
//! - `test_util` (feature `test-util`): a real Prometheus server for integration tests.
//!
//! Reading the queue length and KV usage of an (emulated) vLLM pod:
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use vllm_scaling_core::{GetScalingMetrics, MetricsRequest, PodInfo, PodPhase, TargetId, Timestamp, parse_policy};
//! use vllm_scaling_prom::emulator::{Emulator, EmulatorOptions, Load};
//! use vllm_scaling_prom::{PodScrapeOptions, PodScraper, VllmMetrics};
//!
//! let load = Load { queue_length: Some(12.0), kv_cache_usage: Some(0.5), ..Load::default() };
//! let pod = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions { load, ..Default::default() })
//!     .await
//!     .unwrap();
//! let (_, policy) = parse_policy(
//!     "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: p}\n\
//!      spec: {maxReplicas: 4, scalingRules: [{metric: queue_length, threshold: 5}, {metric: kv_cache_usage, threshold: 80}]}",
//! )
//! .unwrap();
//! let metrics = VllmMetrics::pods(PodScraper::new(PodScrapeOptions::default()).unwrap());
//! let request = MetricsRequest {
//!     target: TargetId::new("llm", "p"),
//!     scale_target_ref: None,
//!     rules: policy.rules,
//!     pods: vec![PodInfo {
//!         name: "vllm-0".into(),
//!         phase: PodPhase::Running,
//!         ready: true,
//!         deleting: false,
//!         metrics_url: Some(pod.metrics_url()),
//!         metrics_url_error: None,
//!     }],
//! };
//! let observed = metrics.get_scaling_metrics(&request, Timestamp::from_secs(0)).await.unwrap();
//! assert_eq!(observed.pods[0].metrics["queue_length"], 12.0);
//! assert_eq!(observed.pods[0].metrics["kv_cache_usage"], 50.0); // percent
//! # });
//! ```

pub mod emulator;
mod error;
pub mod exposition;
#[doc(hidden)]
pub mod fuzzing;
mod http;
mod page;
mod pods;
#[cfg(feature = "prometheus")]
mod prometheus;
pub mod promql;
mod reading;
pub mod snapshot;
mod source;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use error::Error;
pub use http::{CredentialFile, HttpOptions};
pub use page::{PageClient, fetch_page};
pub use pods::{PodScrape, PodScrapeOptions, PodScraper};
#[cfg(feature = "prometheus")]
pub use prometheus::{PrometheusMetrics, PrometheusOptions};
pub use reading::{RuleReading, to_scaling_metrics};
pub use source::VllmMetrics;
