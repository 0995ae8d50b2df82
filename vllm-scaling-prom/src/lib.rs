//! Metrics for vllm-scaling, read from Prometheus or straight from vLLM pods.
//!
//! This crate holds the metrics side of the autoscaler:
//! - [`exposition`]: a strict, fast, zero-copy parser for the Prometheus text exposition
//!   format (and OpenMetrics text), used by every crate that reads a `/metrics` page.
//! - [`snapshot`]: the pure computation behind direct scrapes (catalog values from a page,
//!   rates and quantiles from two pages).
//! - [`emulator`]: a vLLM `/metrics` emulator for demos, tests and benchmarks.
//!
//! ```
//! let page = "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 4\n";
//! let exposition = vllm_scaling_prom::exposition::parse(page).expect("valid page");
//! assert_eq!(exposition.samples().next().map(|s| s.value), Some(4.0));
//! ```

pub mod emulator;
mod error;
pub mod exposition;
#[doc(hidden)]
pub mod fuzzing;
mod http;
pub mod pods;
#[cfg(feature = "prometheus")]
mod prometheus;
pub mod promql;
pub mod reading;
pub mod snapshot;
mod source;
#[cfg(feature = "test-util")]
pub mod test_util;

pub use error::Error;
pub use http::HttpOptions;
pub use pods::{PodScrape, PodScrapeOptions, PodScraper};
#[cfg(feature = "prometheus")]
pub use prometheus::{PrometheusMetrics, PrometheusOptions};
pub use reading::{RuleReading, to_scaling_metrics};
pub use source::VllmMetrics;
