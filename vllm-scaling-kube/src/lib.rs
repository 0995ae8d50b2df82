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
//!
//! # The core's ports on Kubernetes
//! [`KubeScale`] implements the core's [`AdjustReplicas`](vllm_scaling_core::AdjustReplicas)
//! on any `/scale` subresource (found through discovery; a target named by object name,
//! by served model id, or by the policy annotation; `409 Conflict` retried), and
//! [`KubePolicies`] implements [`GetScalingPolicy`](vllm_scaling_core::GetScalingPolicy)
//! on the `vLLMScalingPolicy` resources (by policy name or by model id). The reference
//! controller reads and writes `/scale` through [`KubeScale`]. With a metrics adapter from
//! `vllm-scaling-prom`, they make a custom controller in a few lines: here, one policy
//! evaluated every 15 s by the core's [`reconcile`](vllm_scaling_core::reconcile)
//! (needs a cluster, so compiled but not run):
//! ```no_run
//! # async fn custom_controller() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use vllm_scaling_core::{Clock, Engine, GetScalingPolicy, TargetId, error_chain, reconcile};
//! use vllm_scaling_kube::{KubePolicies, KubeScale, SystemClock};
//! use vllm_scaling_prom::{PodScrapeOptions, PodScraper};
//!
//! let client = kube::Client::try_default().await?;
//! let policies = KubePolicies::new(client.clone());
//! let scale = KubeScale::new(client);
//! let metrics = PodScraper::new(PodScrapeOptions::default())?;
//! // The seed's policy by name; `TargetId::new("default", "meta-llama/Llama-2-70b-hf")`
//! // finds it by the model id it serves.
//! let target = TargetId::new("default", "example-policy");
//! let policy = policies.get_scaling_policy(&target).await?.ok_or("no such policy")?;
//! let mut engine = Engine::new(policy.validate()?);
//! let mut tick = tokio::time::interval(Duration::from_secs(15));
//! loop {
//!     tick.tick().await;
//!     // The pods behind the target's /scale selector, whose /metrics the scraper reads.
//!     let scale_ref = engine.policy().scale_target_ref.clone();
//!     let pods = match scale.resolve_and_read(&target, scale_ref.as_ref()).await {
//!         Ok((resolved, reading)) => scale.pods(&resolved.namespace, &reading).await?,
//!         Err(e) => { eprintln!("{target}: {e}"); continue; }
//!     };
//!     match reconcile(&mut engine, &target, SystemClock.now(), &policies, &scale, &metrics, pods).await {
//!         Ok(d) => println!("{target}: {} -> {}: {}", d.current_replicas, d.desired_replicas, d.explanation),
//!         // Unreadable policy or scale, or a failed write: replicas stay as they are.
//!         Err(e) => eprintln!("{}", error_chain(&e)),
//!     }
//! }
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
mod policies;
pub mod publish;
mod scale;
mod serve;
mod telemetry;

#[cfg(feature = "test-util")]
pub mod fake_api;

pub use controller::{
    CONTROLLER_NAME, Context, ControllerConfig, PAUSED_ANNOTATION, SystemClock, decode_policy, engine_state,
    error_policy, reconcile, reconcile_object, run,
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
pub use policies::{KubePolicies, PolicyError};
pub use publish::{DecisionBoard, INLINE_PREFIX, Outcome, Published};
pub use scale::{KubeScale, RequestError, ScaleError, ScaleReading, ScaleTarget};
pub use serve::{ServeOptions, bind as bind_http, bind_with as bind_http_with};
pub use telemetry::{
    ControllerMetrics, Direction, DirectionLabels, ErrorKind, ErrorLabels, PolicyLabels, RuleLabels,
    ScaleDirectionLabels,
};
