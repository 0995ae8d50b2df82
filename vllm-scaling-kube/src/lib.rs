//! The Kubernetes side of vllm-scaling: the `vLLMScalingPolicy` custom resource, the
//! reference controller that scales vLLM workloads through their `/scale` subresource,
//! leader election, the controller's Prometheus metrics, and (behind the `test-util`
//! feature) an in-process API server to test it all against.
//!
//! The controller is a thin driver around the core engine: it reads the target's scale
//! and pods, gathers metrics through any [`GetScalingMetrics`](vllm_scaling_core::GetScalingMetrics)
//! backend (the `vllm-scaling-prom` adapters in `vllm-autoscaler run`), asks
//! [`Engine::evaluate`](vllm_scaling_core::Engine::evaluate), patches `/scale`, and keeps the
//! engine's history in the policy's status so a restarted controller keeps its windows.
//!
//! # Example
//! The CRD, generated from the core's policy types, accepts the seed's example policy:
//! ```
//! use vllm_scaling_kube::{crd, VllmScalingPolicyResource};
//!
//! let crd = crd();
//! assert_eq!(crd.metadata.name.as_deref(), Some("vllmscalingpolicies.autoscaler.production-stack"));
//! assert_eq!(crd.spec.names.short_names, Some(vec!["vsp".to_owned()]));
//!
//! let seed: VllmScalingPolicyResource = serde_yaml_ng::from_str(r#"
//! apiVersion: autoscaler.production-stack/v1alpha1
//! kind: vLLMScalingPolicy
//! metadata:
//!   name: example-policy
//! spec:
//!   scaleTargetRef:
//!     apiVersion: apps/v1
//!     kind: Deployment
//!     name: meta-llama/Llama-2-70b-hf
//!   minReplicas: 1
//!   maxReplicas: 10
//!   scalingRules:
//!     - metric: "gpu_utilization"
//!       threshold: 75
//!     - metric: "queue_length"
//!       threshold: 10
//!     - metric: "latency"
//!       threshold: 1000
//! "#).unwrap();
//! let resolved = seed.to_core().validate().unwrap();
//! assert_eq!(resolved.max_replicas, 10);
//! ```
//!
//! Running the controller (needs a cluster, so not run here):
//! ```no_run
//! # async fn demo(client: kube::Client) {
//! use std::sync::{Arc, atomic::AtomicBool};
//! use vllm_scaling_core::InMemoryMetrics;
//! use vllm_scaling_kube::{run, Context, ControllerConfig};
//!
//! let ctx = Arc::new(Context::new(client, InMemoryMetrics::default(), ControllerConfig::default()));
//! run(ctx, Arc::new(AtomicBool::new(false)), async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # }
//! ```

pub mod admission;
mod controller;
mod crd;
mod discovery;
mod error;
mod events;
mod gpu;
mod lease;
mod serve;
mod telemetry;

#[cfg(feature = "test-util")]
pub mod fake_api;

pub use controller::{
    CONTROLLER_NAME, Context, ControllerConfig, PAUSED_ANNOTATION, SystemClock, engine_state, error_policy, reconcile,
    reconcile_object, run,
};
pub use crd::{
    GROUP, PLURAL, PendingRescale, PolicyCondition, PolicyStatus, ResolvedTarget, RuleStatusEntry, StatusMergePatch,
    VERSION, VllmScalingPolicyResource, VllmScalingPolicySpec, crd, crd_yaml,
};
pub use discovery::{
    DEFAULT_VLLM_PORT, Match, PATH_ANNOTATION, POLICY_ANNOTATION, PORT_ANNOTATION, SCHEME_ANNOTATION,
    SCRAPE_ANNOTATION, is_object_name, match_annotation, match_model, pod_info, served_models, workload_serves,
};
pub use error::{Error, Result};
pub use gpu::{
    DEFAULT_EXPORTER_PORT, EXPORTER_SELECTORS, ExporterKind, GPU_EXPORTER_NAME, GpuExporters, GpuReading, NodeExporter,
    PodGpu, dcgm_pod_values, exporter_kind, exporter_port, node_exporters, reads_from_exporters,
};
pub use lease::{LeaderElector, Leadership, LeaseAction, LeaseConfig, decide as decide_lease};
pub use serve::bind as bind_http;
pub use telemetry::{
    ControllerMetrics, Direction, DirectionLabels, ErrorKind, ErrorLabels, PolicyLabels, RuleLabels,
    ScaleDirectionLabels,
};
