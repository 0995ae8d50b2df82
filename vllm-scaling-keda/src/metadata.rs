//! What a ScaledObject's trigger metadata asks for: a `vLLMScalingPolicy` by name, or a
//! policy spec carried inline.

use std::collections::HashMap;

use vllm_scaling_kube::{INLINE_PREFIX, VllmScalingPolicySpec};

/// The metadata key naming a `vLLMScalingPolicy`.
pub const POLICY_KEY: &str = "policy";
/// The metadata key of the policy's namespace (default: the ScaledObject's).
pub const NAMESPACE_KEY: &str = "namespace";
/// The metadata key carrying a policy spec inline, as YAML (or JSON).
pub const POLICY_SPEC_KEY: &str = "policySpec";

/// Keys KEDA itself reads from an external trigger's metadata (and passes on): ignored.
pub const KEDA_KEYS: [&str; 7] =
    ["scalerAddress", "caCert", "tlsCertFile", "tlsClientCert", "tlsClientKey", "unsafeSsl", "enableTLS"];

/// The largest inline policy spec accepted, in bytes.
pub const MAX_POLICY_SPEC_BYTES: usize = 64 * 1024;

/// The policy a ScaledObject's trigger asks for.
#[derive(Clone, Debug, PartialEq)]
pub enum PolicyRef {
    /// A `vLLMScalingPolicy` object.
    Named {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A spec carried in the trigger's `policySpec`.
    Inline {
        /// The ScaledObject's namespace.
        namespace: String,
        /// The ScaledObject's name.
        scaled_object: String,
        /// The spec, decoded (not yet validated: its `scaleTargetRef` may be missing).
        spec: Box<VllmScalingPolicySpec>,
        /// The spec's text, which identifies it.
        text: String,
    },
}

impl PolicyRef {
    /// The namespace the policy lives in.
    #[must_use]
    pub fn namespace(&self) -> &str {
        match self {
            Self::Named { namespace, .. } | Self::Inline { namespace, .. } => namespace,
        }
    }

    /// The name the controller evaluates it under (`scaledobject:NAME` when inline).
    #[must_use]
    pub fn policy_name(&self) -> String {
        match self {
            Self::Named { name, .. } => name.clone(),
            Self::Inline { scaled_object, .. } => format!("{INLINE_PREFIX}{scaled_object}"),
        }
    }
}

impl std::fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Named { namespace, name } => write!(f, "vLLMScalingPolicy {namespace}/{name}"),
            Self::Inline { namespace, scaled_object, .. } => {
                write!(f, "the inline policy of ScaledObject {namespace}/{scaled_object}")
            }
        }
    }
}

/// Why a trigger's metadata names no usable policy. Each message names the ScaledObject
/// and the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    /// The ScaledObject reference itself lacks a name or namespace.
    #[error("the ScaledObject reference has no {0}")]
    MissingReference(&'static str),
    /// A key neither KEDA nor this scaler reads.
    #[error(
        "ScaledObject {scaled_object}: trigger metadata key `{key}` is not one this scaler reads{hint} (it reads `policy`, `namespace` and `policySpec`)"
    )]
    UnknownKey {
        /// `namespace/name` of the ScaledObject.
        scaled_object: String,
        /// The key.
        key: String,
        /// ` (did you mean ...?)`, or empty.
        hint: String,
    },
    /// Neither `policy` nor `policySpec`.
    #[error(
        "ScaledObject {0}: the trigger names no policy: set `policy: NAME` (a vLLMScalingPolicy) or `policySpec` (a policy spec inline)"
    )]
    NoPolicy(String),
    /// Both `policy` and `policySpec`.
    #[error("ScaledObject {0}: the trigger sets both `policy` and `policySpec`; set one")]
    BothPolicies(String),
    /// An empty or malformed value.
    #[error("ScaledObject {scaled_object}: trigger metadata `{key}`: {why}")]
    BadValue {
        /// `namespace/name` of the ScaledObject.
        scaled_object: String,
        /// The key.
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// Reads the policy a ScaledObject's trigger asks for.
///
/// # Errors
/// A [`MetadataError`] naming the key.
pub fn parse(
    scaled_object_namespace: &str,
    scaled_object_name: &str,
    metadata: &HashMap<String, String>,
) -> Result<PolicyRef, MetadataError> {
    if scaled_object_name.is_empty() {
        return Err(MetadataError::MissingReference("name"));
    }
    if scaled_object_namespace.is_empty() {
        return Err(MetadataError::MissingReference("namespace"));
    }
    let so = format!("{scaled_object_namespace}/{scaled_object_name}");
    let ours = [POLICY_KEY, NAMESPACE_KEY, POLICY_SPEC_KEY];
    let mut keys: Vec<&String> = metadata.keys().collect();
    keys.sort();
    for key in keys {
        if !ours.contains(&key.as_str()) && !KEDA_KEYS.contains(&key.as_str()) {
            let hint = ours
                .iter()
                .chain(KEDA_KEYS.iter())
                .map(|k| (strsim::jaro_winkler(key, k), *k))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0))
                .map(|(_, k)| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            return Err(MetadataError::UnknownKey { scaled_object: so, key: key.clone(), hint });
        }
    }
    let bad = |key: &'static str, why: String| MetadataError::BadValue { scaled_object: so.clone(), key, why };
    let namespace = match metadata.get(NAMESPACE_KEY).map(|n| n.trim()) {
        None => scaled_object_namespace.to_owned(),
        Some("") => return Err(bad(NAMESPACE_KEY, "is empty".into())),
        Some(ns) if ns != scaled_object_namespace => {
            return Err(bad(
                NAMESPACE_KEY,
                format!(
                    "is `{ns}`, but a policy scales a workload of its own namespace and KEDA's HPA scales one in the ScaledObject's (`{scaled_object_namespace}`): put the policy there"
                ),
            ));
        }
        Some(ns) => ns.to_owned(),
    };
    match (metadata.get(POLICY_KEY), metadata.get(POLICY_SPEC_KEY)) {
        (None, None) => Err(MetadataError::NoPolicy(so)),
        (Some(_), Some(_)) => Err(MetadataError::BothPolicies(so)),
        (Some(name), None) => {
            let name = name.trim();
            if !vllm_scaling_kube::is_object_name(name) {
                return Err(bad(POLICY_KEY, format!("`{name}` is not an object name (lowercase DNS subdomain)")));
            }
            Ok(PolicyRef::Named { namespace, name: name.to_owned() })
        }
        (None, Some(text)) => {
            if text.trim().is_empty() {
                return Err(bad(POLICY_SPEC_KEY, "is empty".into()));
            }
            if text.len() > MAX_POLICY_SPEC_BYTES {
                return Err(bad(
                    POLICY_SPEC_KEY,
                    format!("is {} bytes, more than the {MAX_POLICY_SPEC_BYTES} accepted", text.len()),
                ));
            }
            let de = serde_yaml_ng::Deserializer::from_str(text);
            let spec: VllmScalingPolicySpec = serde_path_to_error::deserialize(de).map_err(|e| {
                let path = e.path().to_string();
                let at = if path == "." { String::new() } else { format!("{path}: ") };
                bad(POLICY_SPEC_KEY, format!("{at}{}", e.into_inner()))
            })?;
            Ok(PolicyRef::Inline {
                namespace,
                scaled_object: scaled_object_name.to_owned(),
                spec: Box::new(spec),
                text: text.clone(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_named_policy_defaults_to_the_scaled_objects_namespace() {
        let got = parse("ns", "so", &meta(&[("policy", "p"), ("scalerAddress", "x:1"), ("caCert", "...")]));
        assert_eq!(got, Ok(PolicyRef::Named { namespace: "ns".into(), name: "p".into() }));
        assert_eq!(got.map(|p| p.policy_name()), Ok("p".to_owned()));
    }

    #[test]
    fn unknown_keys_are_named_with_a_suggestion() {
        let err = parse("ns", "so", &meta(&[("polcy", "p")])).unwrap_err().to_string();
        assert!(err.contains("`polcy`") && err.contains("did you mean `policy`"), "{err}");
    }

    #[test]
    fn malformed_metadata_is_refused_with_its_key() {
        let no = parse("ns", "so", &meta(&[])).unwrap_err().to_string();
        assert!(no.contains("names no policy"), "{no}");
        let both = parse("ns", "so", &meta(&[("policy", "p"), ("policySpec", "minReplicas: 1")])).unwrap_err();
        assert!(matches!(both, MetadataError::BothPolicies(_)));
        let bad_name = parse("ns", "so", &meta(&[("policy", "Not_A_Name")])).unwrap_err().to_string();
        assert!(bad_name.contains("`policy`") && bad_name.contains("object name"), "{bad_name}");
        let other_ns = parse("ns", "so", &meta(&[("policy", "p"), ("namespace", "elsewhere")])).unwrap_err();
        assert!(other_ns.to_string().contains("`namespace`"), "{other_ns}");
        let spec = parse("ns", "so", &meta(&[("policySpec", "maxReplicas: lots")])).unwrap_err().to_string();
        assert!(spec.contains("`policySpec`") && spec.contains("maxReplicas"), "{spec}");
        let unknown_field =
            parse("ns", "so", &meta(&[("policySpec", "maxReplicas: 3\nscalingRulez: []")])).unwrap_err().to_string();
        assert!(unknown_field.contains("scalingRulez"), "{unknown_field}");
        assert_eq!(parse("", "so", &meta(&[("policy", "p")])), Err(MetadataError::MissingReference("namespace")));
    }

    #[test]
    fn an_inline_spec_is_named_after_its_scaled_object() {
        let text = "maxReplicas: 4\nscalingRules:\n  - metric: queue_length\n    threshold: 5\n";
        let got = parse("ns", "so", &meta(&[("policySpec", text)])).expect("parses");
        assert_eq!(got.policy_name(), "scaledobject:so");
        match got {
            PolicyRef::Inline { spec, .. } => assert_eq!(spec.0.max_replicas, 4),
            other => panic!("inline expected, got {other:?}"),
        }
    }
}
