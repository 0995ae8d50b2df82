//! The vllm-scaling engine inside KEDA: a gRPC **external scaler** (KEDA's
//! `externalscaler.proto`: `IsActive`, `StreamIsActive`, `GetMetricSpec`, `GetMetrics`)
//! that answers with the decision of the same engine, metrics adapters and policy status
//! history as the reference controller (`vllm-autoscaler run`).
//!
//! Teams that autoscale with KEDA keep KEDA: a ScaledObject's `external` or
//! `external-push` trigger points at this scaler and names a `vLLMScalingPolicy`
//! (`metadata: {policy: NAME}`) or carries a policy spec inline (`policySpec`).
//!
//! # The math
//! [`GetMetricSpec`](proto::external_scaler_server::ExternalScaler::get_metric_spec)
//! gives one metric, [`METRIC_NAME`], with the AverageValue target [`TARGET`] (1). KEDA
//! puts it in its HPA as an External metric. `GetMetrics` answers `desired × TARGET`,
//! where `desired` is the engine's decision; the HPA computes
//! `ratio = value / (TARGET × statusReplicas)`, keeps `statusReplicas` when the ratio is
//! within its tolerance, and otherwise proposes `ceil(value / TARGET) = desired`. Its own
//! stabilization windows and rate policies then apply: with tolerance 0, no windows and
//! generous policies on the ScaledObject (`deploy/keda/scaledobject.yaml`) it lands on
//! exactly `desired`. `IsActive` is `desired > 0`: with the policy's `scaleToZero`, KEDA
//! takes the target to zero and back. A decision that could not be made, is stale, or
//! had no rule with a value is a gRPC `UNAVAILABLE` error from `GetMetrics` (KEDA's HPA
//! then holds), never a value that would scale down.
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use vllm_scaling_keda::{KedaScaler, serve};
//! use vllm_scaling_kube::{Context, ControllerConfig, DecisionBoard};
//! use vllm_scaling_prom::{PodScrapeOptions, PodScraper, VllmMetrics};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let metrics = VllmMetrics::pods(PodScraper::new(PodScrapeOptions::default())?);
//! let ctx = Arc::new(
//!     Context::new(client, metrics, ControllerConfig::default())
//!         .publishing_to(Arc::new(DecisionBoard::new())),
//! );
//! // The controller's loop evaluates the policies ScaledObjects name...
//! let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
//! tokio::spawn(vllm_scaling_kube::run(ctx.clone(), ready, std::future::pending()));
//! // ...and the scaler answers KEDA from its decisions.
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9443").await?;
//! serve(listener, KedaScaler::new(ctx), None, std::future::pending()).await?;
//! # Ok(())
//! # }
//! ```

pub mod metadata;
mod server;
mod service;

/// The protocol's messages, server and client, generated from `proto/externalscaler.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("externalscaler");
}

pub use metadata::{MetadataError, PolicyRef};
pub use server::{ServeError, TlsFiles, serve};
pub use service::{KedaScaler, METRIC_NAME, STALE_AFTER_PERIODS, TARGET};
