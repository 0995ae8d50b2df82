//! Replica profiles: a [`ReplicaModel`] for one GPU and model, with its cold start, its
//! price and the source of every number, as a YAML document (`profiles/*.yaml` at the
//! repository root, embedded in the binary).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::{ModelError, ReplicaModel};

/// One GPU type serving one model: the step-time constants, limits, cold start and price.
///
/// ```
/// use vllm_scaling_core::sim::ReplicaProfile;
///
/// let h100 = ReplicaProfile::builtin("h100-80gb-llama3-8b").unwrap();
/// assert_eq!(h100.model.gpus_per_replica, 1);
/// assert!(h100.model.attention_ms_per_context_token > 0.0);
/// // The default profile is the simulator's original model.
/// assert_eq!(ReplicaProfile::builtin("default").unwrap().model, vllm_scaling_core::sim::ReplicaModel::default());
/// let e = ReplicaProfile::builtin("h200").unwrap_err();
/// assert!(e.to_string().contains("h100-80gb-llama3-8b"), "{e}");
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaProfile {
    /// Short name (`--profile NAME`).
    pub name: String,
    /// One line: model, GPU, engine.
    pub description: String,
    /// The GPU(s) of one replica.
    pub gpu: String,
    /// The served model.
    pub served_model: String,
    /// The step-time constants and limits.
    pub model: ReplicaModel,
    /// From the scale decision to a ready replica, seconds.
    pub cold_start_secs: f64,
    /// Price of one GPU for an hour, in US dollars (a replica costs
    /// `gpus_per_replica` times this).
    pub gpu_price_per_hour: f64,
    /// Where each number comes from, by its field name (`stepBaseMs`, ...).
    pub sources: BTreeMap<String, String>,
}

/// The profiles shipped with the binary, by file name.
const BUILTIN: [(&str, &str); 7] = [
    ("default", include_str!("../../../profiles/default.yaml")),
    ("h100-80gb-llama3-8b", include_str!("../../../profiles/h100-80gb-llama3-8b.yaml")),
    ("a100-80gb-llama3-8b", include_str!("../../../profiles/a100-80gb-llama3-8b.yaml")),
    ("l4-24gb-llama3-8b", include_str!("../../../profiles/l4-24gb-llama3-8b.yaml")),
    ("a10g-24gb-llama3-8b", include_str!("../../../profiles/a10g-24gb-llama3-8b.yaml")),
    ("h100-tp4-llama3-70b", include_str!("../../../profiles/h100-tp4-llama3-70b.yaml")),
    ("h100-tp8-llama3-70b", include_str!("../../../profiles/h100-tp8-llama3-70b.yaml")),
];

/// The numeric fields of a profile document, each of which needs a `sources` entry.
pub const PROFILE_NUMBERS: [&str; 10] = [
    "stepBaseMs",
    "prefillMsPerToken",
    "decodeMsPerSeq",
    "attentionMsPerContextToken",
    "kvCacheTokens",
    "maxNumSeqs",
    "maxBatchedTokens",
    "coldStartSecs",
    "gpuPricePerHour",
    "gpusPerReplica",
];

/// Why a profile was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProfileError {
    /// No built-in profile has this name.
    #[error("unknown profile `{name}`: expected a file path or one of {known}")]
    Unknown {
        /// The name asked for.
        name: String,
        /// The built-in names, comma-separated.
        known: String,
    },
    /// The YAML does not parse into a profile (unknown or missing field, wrong type).
    #[error("{0}")]
    Syntax(String),
    /// A step-time constant or limit is impossible.
    #[error("field {field}: {reason}")]
    Model {
        /// The document's field name.
        field: String,
        /// Why.
        reason: String,
    },
    /// Another field is out of range or missing its source.
    #[error("field {field}: {reason}")]
    Field {
        /// The document's field name.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// The document as written, every field named (unknown fields are refused).
#[derive(Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileDoc {
    kind: String,
    name: String,
    description: String,
    gpu: String,
    model: String,
    gpus_per_replica: u32,
    step_base_ms: f64,
    prefill_ms_per_token: f64,
    decode_ms_per_seq: f64,
    attention_ms_per_context_token: f64,
    kv_cache_tokens: u64,
    max_num_seqs: u32,
    max_batched_tokens: u32,
    cold_start_secs: f64,
    gpu_price_per_hour: f64,
    sources: BTreeMap<String, String>,
}

/// `snake_case` or `kebab-case` to `camelCase`: a model field (`prefill_ms_per_token`) or
/// a command-line flag (`prefill-ms-per-token`) as the profile documents name it
/// (`prefillMsPerToken`).
#[must_use]
pub fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for c in name.chars() {
        if c == '_' || c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl ReplicaProfile {
    /// The names of the built-in profiles.
    #[must_use]
    pub fn builtin_names() -> Vec<&'static str> {
        BUILTIN.iter().map(|(n, _)| *n).collect()
    }

    /// Every built-in profile, parsed and validated.
    ///
    /// # Errors
    /// A built-in file that does not validate (a bug caught by the tests).
    pub fn builtins() -> Result<Vec<Self>, ProfileError> {
        BUILTIN.iter().map(|(_, text)| Self::parse(text)).collect()
    }

    /// A built-in profile by name.
    ///
    /// # Errors
    /// [`ProfileError::Unknown`] with the list of names.
    pub fn builtin(name: &str) -> Result<Self, ProfileError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => Self::parse(text),
            None => Err(ProfileError::Unknown { name: name.to_owned(), known: Self::builtin_names().join(", ") }),
        }
    }

    /// Parses and validates a profile document.
    ///
    /// # Errors
    /// [`ProfileError::Syntax`] with the line and column of a bad or unknown field,
    /// [`ProfileError::Model`] / [`ProfileError::Field`] naming an impossible number or a
    /// number without a source.
    pub fn parse(text: &str) -> Result<Self, ProfileError> {
        let doc: ProfileDoc = serde_yaml_ng::from_str(text).map_err(|e| ProfileError::Syntax(e.to_string()))?;
        if doc.kind != "ReplicaProfile" {
            return Err(ProfileError::Field {
                field: "kind",
                reason: format!("must be `ReplicaProfile`, got `{}`", doc.kind),
            });
        }
        let profile = Self {
            name: doc.name,
            description: doc.description,
            gpu: doc.gpu,
            served_model: doc.model,
            model: ReplicaModel {
                step_base_ms: doc.step_base_ms,
                prefill_ms_per_token: doc.prefill_ms_per_token,
                decode_ms_per_seq: doc.decode_ms_per_seq,
                attention_ms_per_context_token: doc.attention_ms_per_context_token,
                kv_cache_tokens: doc.kv_cache_tokens,
                max_num_seqs: doc.max_num_seqs,
                max_batched_tokens: doc.max_batched_tokens,
                gpus_per_replica: doc.gpus_per_replica,
            },
            cold_start_secs: doc.cold_start_secs,
            gpu_price_per_hour: doc.gpu_price_per_hour,
            sources: doc.sources,
        };
        profile.validate()?;
        Ok(profile)
    }

    /// Checks the numbers and that each has a source.
    ///
    /// # Errors
    /// The first impossible number, a name that is not a short identifier, or a number
    /// without a non-empty `sources` entry.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let field = |field: &'static str, reason: String| Err(ProfileError::Field { field, reason });
        if self.name.is_empty()
            || self.name.len() > 64
            || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return field("name", format!("must be 1–64 letters, digits, `-`, `_` or `.`, got `{}`", self.name));
        }
        self.model
            .validate()
            .map_err(|ModelError { field, reason }| ProfileError::Model { field: camel_case(field), reason })?;
        if !(self.cold_start_secs.is_finite() && (0.0..=86_400.0).contains(&self.cold_start_secs)) {
            return field(
                "coldStartSecs",
                format!("must be a number of seconds in [0, 86400], got {}", self.cold_start_secs),
            );
        }
        if !(self.gpu_price_per_hour.is_finite() && self.gpu_price_per_hour >= 0.0) {
            return field("gpuPricePerHour", format!("must be a finite number >= 0, got {}", self.gpu_price_per_hour));
        }
        for number in PROFILE_NUMBERS {
            if self.sources.get(number).is_none_or(|s| s.trim().is_empty()) {
                return field(
                    "sources",
                    format!(
                        "needs an entry for `{number}`: where the number comes from (say \"estimate\" where it is one)"
                    ),
                );
            }
        }
        if let Some(extra) = self.sources.keys().find(|k| !PROFILE_NUMBERS.contains(&k.as_str())) {
            return field(
                "sources",
                format!("`{extra}` is not a number of the profile (expected one of {})", PROFILE_NUMBERS.join(", ")),
            );
        }
        Ok(())
    }

    /// The profile as a YAML document [`parse`](Self::parse) reads back.
    #[must_use]
    pub fn to_yaml(&self) -> String {
        let m = &self.model;
        let doc = ProfileDoc {
            kind: "ReplicaProfile".to_owned(),
            name: self.name.clone(),
            description: self.description.clone(),
            gpu: self.gpu.clone(),
            model: self.served_model.clone(),
            gpus_per_replica: m.gpus_per_replica,
            step_base_ms: m.step_base_ms,
            prefill_ms_per_token: m.prefill_ms_per_token,
            decode_ms_per_seq: m.decode_ms_per_seq,
            attention_ms_per_context_token: m.attention_ms_per_context_token,
            kv_cache_tokens: m.kv_cache_tokens,
            max_num_seqs: m.max_num_seqs,
            max_batched_tokens: m.max_batched_tokens,
            cold_start_secs: self.cold_start_secs,
            gpu_price_per_hour: self.gpu_price_per_hour,
            sources: self.sources.clone(),
        };
        serde_yaml_ng::to_string(&doc).unwrap_or_default()
    }

    /// What a replica costs per hour, US dollars.
    #[must_use]
    pub fn replica_price_per_hour(&self) -> f64 {
        self.gpu_price_per_hour * f64::from(self.model.gpus_per_replica)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_loads_validates_and_round_trips() {
        let all = ReplicaProfile::builtins().unwrap();
        assert_eq!(all.len(), BUILTIN.len());
        for (p, (file, _)) in all.iter().zip(BUILTIN) {
            assert_eq!(p.name, file, "the name inside {file}.yaml is its file name");
            assert_eq!(&ReplicaProfile::parse(&p.to_yaml()).unwrap(), p);
        }
        let gpus: Vec<u32> = all.iter().map(|p| p.model.gpus_per_replica).collect();
        assert!(gpus.contains(&4) && gpus.contains(&8));
    }

    fn h100_text() -> String {
        BUILTIN[1].1.to_owned()
    }

    #[test]
    fn impossible_profiles_name_the_field() {
        for (from, to, needle) in [
            ("stepBaseMs: 6.0", "stepBaseMs: -1", "field stepBaseMs:"),
            ("kvCacheTokens: 420000", "kvCacheTokens: 0", "field kvCacheTokens:"),
            ("maxBatchedTokens: 8192", "maxBatchedTokens: 16", "field maxBatchedTokens:"),
            (
                "attentionMsPerContextToken: 0.000056",
                "attentionMsPerContextToken: -0.1",
                "field attentionMsPerContextToken:",
            ),
            ("coldStartSecs: 60", "coldStartSecs: -5", "field coldStartSecs:"),
            ("gpuPricePerHour: 3.00", "gpuPricePerHour: .nan", "field gpuPricePerHour:"),
            ("gpusPerReplica: 1", "gpusPerReplica: 0", "field gpusPerReplica:"),
            ("kind: ReplicaProfile", "kind: Profile", "field kind:"),
            ("stepBaseMs: 6.0", "stepBase: 6.0", "unknown field `stepBase`"),
            ("kvCacheTokens: 420000", "kvCacheTokens: lots", "kvCacheTokens"),
        ] {
            let text = h100_text().replace(from, to);
            assert_ne!(text, h100_text(), "{from}");
            let e = ReplicaProfile::parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{to}: {e}");
        }
        // Syntax errors say where.
        let e = ReplicaProfile::parse(&h100_text().replace("stepBaseMs: 6.0", "stepBase: 6.0")).unwrap_err();
        assert!(e.to_string().contains("line"), "{e}");
        // Every number needs its source.
        let e = ReplicaProfile::parse(&h100_text().replace("  coldStartSecs: \"", "  coldStart: \"")).unwrap_err();
        assert!(e.to_string().contains("coldStartSecs"), "{e}");
    }
}
