//! [`KubePolicies`]: the core's [`GetScalingPolicy`] port on the `vLLMScalingPolicy`
//! custom resources, by policy name or by the model id a policy's target serves.

use async_trait::async_trait;
use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use vllm_scaling_core::{GetScalingPolicy, TargetId, VllmScalingPolicy};

use crate::controller::{decode_policy, policy_resource};
use crate::crd::VllmScalingPolicyResource;
use crate::discovery::{is_object_name, workload_serves};
use crate::scale::{KubeScale, RequestError, timed};

/// Why a policy could not be looked up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// Reading or listing policies failed.
    #[error("{step} in namespace {namespace}: {source}")]
    Request {
        /// `reading the policy` or `listing the policies`.
        step: &'static str,
        /// The namespace.
        namespace: String,
        /// The failed request.
        source: RequestError,
    },
    /// The stored policy does not decode as a `vLLMScalingPolicy` (a spec the CRD's schema
    /// admits but the policy types refuse), decoded as the controller decodes it.
    #[error("the vLLMScalingPolicy {namespace}/{name} does not decode: {reason}")]
    Decode {
        /// The namespace.
        namespace: String,
        /// The policy's name.
        name: String,
        /// What is wrong, with the field's path (`spec.minReplicas: ...`).
        reason: String,
    },
    /// Several policies in the namespace target workloads serving the model.
    #[error("several vLLMScalingPolicies in namespace {namespace} target model `{model}` ({}); address one by name", policies.join(", "))]
    Ambiguous {
        /// The namespace.
        namespace: String,
        /// The model id.
        model: String,
        /// Their names.
        policies: Vec<String>,
    },
}

/// The core's [`GetScalingPolicy`] port on the `vLLMScalingPolicy` resources.
///
/// [`get_scaling_policy`](GetScalingPolicy::get_scaling_policy) reads the [`TargetId`]'s
/// name as a policy name when it is an object name and such a policy exists, and
/// otherwise as a served model id ([`by_model`](Self::by_model)). An empty namespace is
/// the client's default namespace. No policy is `Ok(None)`.
pub struct KubePolicies {
    client: Client,
    scale: KubeScale,
    request_timeout: std::time::Duration,
}

impl std::fmt::Debug for KubePolicies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubePolicies").field("request_timeout", &self.request_timeout).finish_non_exhaustive()
    }
}

fn decode(namespace: &str, object: &DynamicObject) -> Result<VllmScalingPolicyResource, PolicyError> {
    decode_policy(object).map_err(|reason| PolicyError::Decode {
        namespace: namespace.to_owned(),
        name: object.metadata.name.clone().unwrap_or_default(),
        reason,
    })
}

impl KubePolicies {
    /// An adapter on `client` (10 s request timeout).
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self { scale: KubeScale::new(client.clone()), client, request_timeout: std::time::Duration::from_secs(10) }
    }

    /// Sets the longest any one request may take (builder style).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.request_timeout = timeout;
        self.scale = self.scale.with_request_timeout(timeout);
        self
    }

    fn api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &policy_resource())
    }

    fn namespace_of<'a>(&'a self, namespace: &'a str) -> &'a str {
        if namespace.is_empty() { self.client.default_namespace() } else { namespace }
    }

    /// The policy `namespace/name`, or `None` when there is none.
    ///
    /// # Errors
    /// When the read fails or the stored object does not decode.
    pub async fn by_name(&self, namespace: &str, name: &str) -> Result<Option<VllmScalingPolicyResource>, PolicyError> {
        let namespace = self.namespace_of(namespace);
        match timed(self.request_timeout, "reading the policy", self.api(namespace).get_opt(name)).await {
            Ok(Some(object)) => decode(namespace, &object).map(Some),
            Ok(None) => Ok(None),
            Err(source) => {
                Err(PolicyError::Request { step: "reading the policy", namespace: namespace.to_owned(), source })
            }
        }
    }

    /// The single policy in `namespace` whose target serves `model`: its
    /// `scaleTargetRef.name` is the model id, or the workload it resolves to (by name, or
    /// by the policy annotation) runs a vLLM container serving it. Policies that do not
    /// decode or whose target does not resolve are skipped (logged at debug level).
    ///
    /// # Errors
    /// When listing fails, or several policies match ([`PolicyError::Ambiguous`]).
    pub async fn by_model(
        &self,
        namespace: &str,
        model: &str,
    ) -> Result<Option<VllmScalingPolicyResource>, PolicyError> {
        let namespace = self.namespace_of(namespace);
        let list =
            timed(self.request_timeout, "listing the policies", self.api(namespace).list(&ListParams::default()))
                .await
                .map_err(|source| PolicyError::Request {
                    step: "listing the policies",
                    namespace: namespace.to_owned(),
                    source,
                })?;
        let mut found: Vec<VllmScalingPolicyResource> = Vec::new();
        for object in list.items {
            let policy = match decode(namespace, &object) {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "skipping a policy that does not decode");
                    continue;
                }
            };
            let name = policy.metadata.name.clone().unwrap_or_default();
            let scale_ref = policy.to_core().spec.scale_target_ref;
            if scale_ref.as_ref().is_some_and(|r| r.name == model) {
                found.push(policy);
                continue;
            }
            let serves = match self.scale.resolve(namespace, &name, scale_ref.as_ref()).await {
                Ok(target) => match self.scale.workload(&target).await {
                    Ok(w) => w.is_some_and(|w| workload_serves(&w, model)),
                    Err(e) => {
                        tracing::debug!(policy = name, error = %e, "could not read the policy's target");
                        false
                    }
                },
                Err(e) => {
                    tracing::debug!(policy = name, error = %e, "the policy's target does not resolve");
                    false
                }
            };
            if serves {
                found.push(policy);
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.pop()),
            _ => {
                let mut policies: Vec<String> =
                    found.iter().map(|p| p.metadata.name.clone().unwrap_or_default()).collect();
                policies.sort();
                Err(PolicyError::Ambiguous { namespace: namespace.to_owned(), model: model.to_owned(), policies })
            }
        }
    }

    /// [`by_name`](Self::by_name) when `name` is an object name and such a policy exists,
    /// else [`by_model`](Self::by_model).
    ///
    /// # Errors
    /// As those two.
    pub async fn find(&self, namespace: &str, name: &str) -> Result<Option<VllmScalingPolicyResource>, PolicyError> {
        if is_object_name(name)
            && let Some(policy) = self.by_name(namespace, name).await?
        {
            return Ok(Some(policy));
        }
        self.by_model(namespace, name).await
    }
}

#[async_trait]
impl GetScalingPolicy for KubePolicies {
    type Error = PolicyError;

    async fn get_scaling_policy(&self, target: &TargetId) -> Result<Option<VllmScalingPolicy>, PolicyError> {
        Ok(self.find(&target.namespace, &target.name).await?.map(|p| p.to_core()))
    }
}
