//! Decisions published for another actuator instead of written to `/scale`.
//!
//! KEDA's external scaler (`vllm-scaling-keda`) runs the controller with a
//! [`DecisionBoard`] ([`Context::publishing_to`](crate::Context::publishing_to)): every
//! evaluation still reads the target's `/scale` and pods, gathers metrics, asks the engine
//! and writes the policy's status, but instead of patching `/scale` it posts the outcome
//! here, where the gRPC service reads it (and `StreamIsActive` waits on it). KEDA's HPA
//! then applies it.
//!
//! Which controller evaluates which policy: a policy that a KEDA ScaledObject's
//! `external`/`external-push` trigger names (`metadata.policy`) belongs to the publishing
//! controller; every other policy to the one that writes `/scale`. Each leaves the other's
//! policies alone, status included, so running both never makes two writers.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;
use tokio::sync::watch;
use vllm_scaling_core::Timestamp;

/// The name prefix of a policy carried inline in a ScaledObject's trigger metadata: such a
/// policy is named `scaledobject:<ScaledObject name>` (a colon is never in an object name,
/// so it cannot collide with a `vLLMScalingPolicy`). It has no object: no status is
/// written and no event published for it.
pub const INLINE_PREFIX: &str = "scaledobject:";

/// Whether `name` is the name of a policy carried inline by a ScaledObject.
#[must_use]
pub fn is_inline(name: &str) -> bool {
    name.starts_with(INLINE_PREFIX)
}

/// One evaluation's outcome, as published.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The engine decided.
    Decided(Published),
    /// No decision could be made: the policy is invalid or paused, its target is missing
    /// or taken, its `/scale` could not be read...; `reason` says which.
    NotDecided {
        /// Why, as the policy's status explains it.
        reason: String,
        /// The replicas last seen on the target, when known.
        current_replicas: Option<i32>,
        /// When.
        at: Timestamp,
    },
}

impl Outcome {
    /// When it was published.
    #[must_use]
    pub fn at(&self) -> Timestamp {
        match self {
            Self::Decided(p) => p.at,
            Self::NotDecided { at, .. } => *at,
        }
    }

    /// The replicas the target had when this was published, when known.
    #[must_use]
    pub fn current_replicas(&self) -> Option<i32> {
        match self {
            Self::Decided(p) => Some(p.current_replicas),
            Self::NotDecided { current_replicas, .. } => *current_replicas,
        }
    }
}

/// A decision of the engine, as published.
#[derive(Clone, Debug, PartialEq)]
pub struct Published {
    /// The engine's desired replicas (stabilized, rate-limited, within the policy's
    /// bounds; 0 only with `scaleToZero`).
    pub desired_replicas: i32,
    /// The target's `spec.replicas` the decision started from.
    pub current_replicas: i32,
    /// Whether the engine found no proposal to act on (every rule missing or invalid, no
    /// fallback): it held the current count for want of data.
    pub no_valid_metric: bool,
    /// The engine's explanation.
    pub explanation: String,
    /// When it was decided.
    pub at: Timestamp,
}

/// The newest outcome of every policy a publishing controller evaluates, keyed by
/// namespace and policy name.
#[derive(Debug, Default)]
pub struct DecisionBoard {
    slots: Mutex<HashMap<PolicyKey, Slot>>,
}

/// Namespace and policy name.
type PolicyKey = (String, String);
/// The newest outcome of one policy, with its subscribers.
type Slot = watch::Sender<Option<Outcome>>;

impl DecisionBoard {
    /// An empty board.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, namespace: &str, name: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry((namespace.to_owned(), name.to_owned())).or_insert_with(|| watch::channel(None).0).clone()
    }

    /// The newest outcome of a policy, if it was evaluated.
    #[must_use]
    pub fn latest(&self, namespace: &str, name: &str) -> Option<Outcome> {
        let slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.get(&(namespace.to_owned(), name.to_owned())).and_then(|s| s.borrow().clone())
    }

    /// A receiver that wakes at every outcome published for a policy from now on.
    #[must_use]
    pub fn subscribe(&self, namespace: &str, name: &str) -> watch::Receiver<Option<Outcome>> {
        self.slot(namespace, name).subscribe()
    }

    /// Posts an outcome.
    pub fn publish(&self, namespace: &str, name: &str, outcome: Outcome) {
        self.slot(namespace, name).send_replace(Some(outcome));
    }

    /// Forgets a policy (deleted).
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut slots = self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// How many policies have a slot.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether no policy has a slot.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The trigger types of KEDA's external scalers.
const EXTERNAL_TRIGGERS: [&str; 2] = ["external", "external-push"];

/// Whether the KEDA ScaledObject `scaled_object` (as JSON) drives the policy
/// `namespace/name` through an external scaler: one of its `external`/`external-push`
/// triggers names the policy in `metadata.policy` (with `metadata.namespace` absent or
/// equal), or the policy is the one the ScaledObject carries inline.
#[must_use]
pub fn drives(scaled_object: &Value, namespace: &str, name: &str) -> bool {
    let so_name = scaled_object["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(inline) = name.strip_prefix(INLINE_PREFIX) {
        return inline == so_name;
    }
    let so_namespace = scaled_object["metadata"]["namespace"].as_str().unwrap_or(namespace);
    scaled_object["spec"]["triggers"].as_array().is_some_and(|triggers| {
        triggers.iter().any(|t| {
            let external = t["type"].as_str().is_some_and(|ty| EXTERNAL_TRIGGERS.contains(&ty));
            let metadata = &t["metadata"];
            let policy_namespace = metadata["namespace"].as_str().unwrap_or(so_namespace);
            external && metadata["policy"].as_str() == Some(name) && policy_namespace == namespace
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn so(triggers: Value) -> Value {
        json!({"metadata": {"name": "so", "namespace": "ns"}, "spec": {"triggers": triggers}})
    }

    #[test]
    fn a_scaled_object_drives_the_policy_its_external_trigger_names() {
        let named = so(json!([{"type": "external-push", "metadata": {"policy": "p"}}]));
        assert!(drives(&named, "ns", "p"));
        assert!(!drives(&named, "ns", "q"));
        assert!(!drives(&named, "other", "p"), "metadata.namespace defaults to the ScaledObject's");
        let elsewhere = so(json!([{"type": "external", "metadata": {"policy": "p", "namespace": "other"}}]));
        assert!(drives(&elsewhere, "other", "p"));
        assert!(!drives(&elsewhere, "ns", "p"));
        let prometheus = so(json!([{"type": "prometheus", "metadata": {"policy": "p"}}]));
        assert!(!drives(&prometheus, "ns", "p"), "only external scalers call us");
        assert!(drives(&so(json!([])), "ns", "scaledobject:so"), "its own inline policy");
        assert!(!drives(&so(json!([])), "ns", "scaledobject:other"));
    }

    #[test]
    fn the_board_keeps_the_newest_outcome_and_wakes_subscribers() {
        let board = DecisionBoard::new();
        assert!(board.latest("ns", "p").is_none());
        let rx = board.subscribe("ns", "p");
        let outcome = Outcome::Decided(Published {
            desired_replicas: 3,
            current_replicas: 2,
            no_valid_metric: false,
            explanation: "up".into(),
            at: Timestamp::from_millis(5),
        });
        board.publish("ns", "p", outcome.clone());
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(board.latest("ns", "p"), Some(outcome));
        board.forget("ns", "p");
        assert!(board.is_empty());
    }
}
