//! Metrics for vllm-scaling, read from Prometheus or straight from vLLM pods.
//!
//! This crate holds the metrics side of the autoscaler:
//! - [`exposition`]: a strict, fast, zero-copy parser for the Prometheus text exposition
//!   format (and OpenMetrics text), used by every crate that reads a `/metrics` page.
//!
//! ```
//! let page = "vllm:num_requests_waiting{engine=\"0\",model_name=\"m\"} 4\n";
//! let exposition = vllm_scaling_prom::exposition::parse(page).expect("valid page");
//! assert_eq!(exposition.samples().next().map(|s| s.value), Some(4.0));
//! ```

pub mod exposition;
