//! The vLLM replica model: step-time constants, KV-cache budget and batch limits.

use serde::{Deserialize, Serialize};

/// The performance model of one vLLM replica (one engine on one GPU).
///
/// vLLM's scheduler runs one *step* at a time (continuous batching with chunked prefill):
/// each step generates one token for every decoding sequence and processes up to
/// [`max_batched_tokens`](Self::max_batched_tokens) prompt tokens. A step takes
///
/// `step_base_ms + prefill_ms_per_token × (prompt tokens in the step) + decode_ms_per_seq × (sequences in the step)
/// + attention_ms_per_context_token × (KV tokens the step's decoding sequences attend to)`.
///
/// The last term makes decode cost grow with context length: a decode step reads every
/// cached token of every decoding sequence (for Llama-3-8B in BF16, 128 KiB per token at
/// the GPU's memory bandwidth). With it at 0 (the default) a decode step costs the same
/// whatever the context.
///
/// A request is admitted from the waiting queue (FIFO) when a sequence slot is free and
/// the KV cache can hold its prompt and its whole output (vLLM allocates blocks lazily
/// and preempts when it runs out; reserving up front is the no-preemption approximation).
///
/// The defaults are calibrated to Llama-3-8B in BF16 on one H100 with vLLM
/// (`../shared/research-notes/traces-and-perf.md` §2b): prefill ≈ 25 k tokens/s, decode
/// steps of 6–30 ms, about 450 k KV tokens (60 GB free at 0.125 MB/token), which gives
/// 10–13 req/s of the Azure chat mix at TTFT ≤ 2 s.
///
/// ```
/// use vllm_scaling_core::sim::ReplicaModel;
///
/// let model = ReplicaModel::default();
/// model.validate().unwrap();
/// // A 2048-token prompt alone in a step: 6 + 0.04 × 2048 + 0.08 ≈ 88 ms.
/// assert!((model.step_ms(2048, 1) - 88.0).abs() < 0.1);
/// let broken = ReplicaModel { kv_cache_tokens: 0, ..model };
/// assert!(broken.validate().unwrap_err().to_string().contains("kv_cache_tokens"));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaModel {
    /// `a`: fixed cost of a step (scheduling, kernel launches, sampling), milliseconds.
    pub step_base_ms: f64,
    /// `b`: cost of each prompt token processed in a step, milliseconds.
    pub prefill_ms_per_token: f64,
    /// `c`: cost of each sequence in the step (attention over its KV cache, sampling), milliseconds.
    pub decode_ms_per_seq: f64,
    /// KV-cache capacity in tokens.
    pub kv_cache_tokens: u64,
    /// Most sequences in the running batch (`--max-num-seqs`, vLLM default 256).
    pub max_num_seqs: u32,
    /// Token budget of one step (`--max-num-batched-tokens`, 8192 for online serving).
    pub max_batched_tokens: u32,
    /// `d`: cost of each KV-cache token a decoding sequence attends to, milliseconds
    /// (0: decode cost does not depend on context length).
    #[serde(default)]
    pub attention_ms_per_context_token: f64,
    /// GPUs one replica spans (tensor parallelism): GPU-hours are replica-hours times this.
    #[serde(default = "one_gpu")]
    pub gpus_per_replica: u32,
}

const fn one_gpu() -> u32 {
    1
}

impl Default for ReplicaModel {
    fn default() -> Self {
        Self {
            step_base_ms: 6.0,
            prefill_ms_per_token: 0.04,
            decode_ms_per_seq: 0.08,
            kv_cache_tokens: 450_000,
            max_num_seqs: 256,
            max_batched_tokens: 8192,
            attention_ms_per_context_token: 0.0,
            gpus_per_replica: 1,
        }
    }
}

/// Why a model's constants cannot be simulated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("impossible replica model: {field} {reason}")]
pub struct ModelError {
    /// The constant at fault.
    pub field: &'static str,
    /// Why.
    pub reason: String,
}

impl ReplicaModel {
    /// Checks that the constants describe a replica that makes progress.
    ///
    /// # Errors
    /// The first impossible constant: negative or non-finite costs, a step that takes no
    /// time (a simulation would never advance), an empty KV cache or batch, a step budget
    /// smaller than the batch (vLLM rejects `max_num_batched_tokens < max_num_seqs` too).
    pub fn validate(&self) -> Result<(), ModelError> {
        let cost = |field: &'static str, v: f64| {
            if (0.0..=60_000.0).contains(&v) {
                Ok(())
            } else {
                Err(ModelError {
                    field,
                    reason: format!("must be a finite number of milliseconds in [0, 60000], got {v}"),
                })
            }
        };
        cost("step_base_ms", self.step_base_ms)?;
        cost("prefill_ms_per_token", self.prefill_ms_per_token)?;
        cost("decode_ms_per_seq", self.decode_ms_per_seq)?;
        cost("attention_ms_per_context_token", self.attention_ms_per_context_token)?;
        if self.step_base_ms <= 0.0 {
            return Err(ModelError {
                field: "step_base_ms",
                reason: "must be greater than 0: a step that takes no time never lets simulated time advance"
                    .to_owned(),
            });
        }
        if self.kv_cache_tokens == 0 {
            return Err(ModelError { field: "kv_cache_tokens", reason: "must be at least 1".to_owned() });
        }
        if self.gpus_per_replica == 0 || self.gpus_per_replica > 64 {
            return Err(ModelError {
                field: "gpus_per_replica",
                reason: format!("must be in [1, 64], got {}", self.gpus_per_replica),
            });
        }
        if self.max_num_seqs == 0 {
            return Err(ModelError { field: "max_num_seqs", reason: "must be at least 1".to_owned() });
        }
        if self.max_batched_tokens < self.max_num_seqs {
            return Err(ModelError {
                field: "max_batched_tokens",
                reason: format!(
                    "must be at least max_num_seqs ({}), got {}: every decoding sequence needs one token of the step budget",
                    self.max_num_seqs, self.max_batched_tokens
                ),
            });
        }
        Ok(())
    }

    /// The time to first token of a prompt alone on an idle replica, seconds: its chunks
    /// of at most `max_batched_tokens`, one step each. No fleet can do better, so a
    /// request with a longer idle TTFT than the objective can never meet it.
    #[must_use]
    pub fn idle_ttft_secs(&self, input_tokens: u32) -> f64 {
        let chunk = self.max_batched_tokens.max(1);
        let (full, rest) = (input_tokens / chunk, input_tokens % chunk);
        let mut ms = f64::from(full) * self.step_ms(chunk, 1);
        if rest > 0 {
            ms += self.step_ms(rest, 1);
        }
        ms / 1000.0
    }

    /// How long a step with `prefill_tokens` prompt tokens and `seqs` sequences takes, ms,
    /// with no decoding context (see [`step_ms_with_context`](Self::step_ms_with_context)).
    #[must_use]
    pub fn step_ms(&self, prefill_tokens: u32, seqs: usize) -> f64 {
        self.step_base_ms + self.prefill_ms_per_token * f64::from(prefill_tokens) + self.decode_ms_per_seq * seqs as f64
    }

    /// How long a step takes, ms, when its decoding sequences hold `context_tokens` KV
    /// tokens between them (their prompts and what they generated so far).
    #[must_use]
    pub fn step_ms_with_context(&self, prefill_tokens: u32, seqs: usize, context_tokens: u64) -> f64 {
        self.step_ms(prefill_tokens, seqs) + self.attention_ms_per_context_token * context_tokens as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_constants_are_named() {
        let m = ReplicaModel::default();
        for (bad, field) in [
            (ReplicaModel { step_base_ms: 0.0, ..m }, "step_base_ms"),
            (ReplicaModel { step_base_ms: f64::NAN, ..m }, "step_base_ms"),
            (ReplicaModel { prefill_ms_per_token: -1.0, ..m }, "prefill_ms_per_token"),
            (ReplicaModel { decode_ms_per_seq: f64::INFINITY, ..m }, "decode_ms_per_seq"),
            (ReplicaModel { kv_cache_tokens: 0, ..m }, "kv_cache_tokens"),
            (ReplicaModel { max_num_seqs: 0, ..m }, "max_num_seqs"),
            (ReplicaModel { max_batched_tokens: 16, ..m }, "max_batched_tokens"),
            (ReplicaModel { attention_ms_per_context_token: -1e-6, ..m }, "attention_ms_per_context_token"),
            (ReplicaModel { gpus_per_replica: 0, ..m }, "gpus_per_replica"),
        ] {
            let e = bad.validate().unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.to_string().starts_with("impossible replica model:"), "{e}");
        }
        m.validate().unwrap();
    }
}
