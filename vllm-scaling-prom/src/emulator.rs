//! A vLLM metrics emulator: a small HTTP server that serves a realistic, changing vLLM
//! `/metrics` page, for demos, integration tests and benchmarks.
//!
//! The page has the V1 names and labels (`engine`, `model_name`, `_created` series,
//! histograms with the V1 bucket boundaries) or, with [`EmulatorOptions::v0_names`], the V0
//! ones (`gpu_cache_usage_perc`, `time_per_output_token_seconds`, no `engine` label).
//! Behind it runs a fluid queueing model of one vLLM replica: requests arrive at the
//! configured rate, up to `max_batch` of them run at once (split evenly over the data-parallel
//! engines), each takes about `service_secs`, and the rest wait. Every finished request is
//! observed into the latency histograms, so quantiles move with load.
//!
//! The load is settable at start ([`EmulatorOptions::load`]) and at run time, in process
//! ([`Emulator::control`]) or over HTTP: `POST /control` with a JSON [`ControlUpdate`]
//! (`{"request_rate": 20}`, `{"queue_length": 12, "ttft_ms": 900}`; `null` clears an override),
//! `GET /control` shows the load and what is being served. A [`Fault`] makes `/metrics`
//! misbehave (garbage, HTTP 500, hang, dropped connection, delay, a huge streamed page, a
//! redirect) to test error paths.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions};
//!
//! let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default()).await.unwrap();
//! println!("scrape {}", emulator.metrics_url());
//! emulator.control(ControlUpdate { queue_length: Some(Some(12.0)), ..Default::default() }).unwrap();
//! // What GET /metrics serves now:
//! let page = emulator.render();
//! assert!(page.contains("vllm:num_requests_waiting{engine=\"0\",model_name=\"meta-llama/Llama-3.1-8B-Instruct\"} 12.0"));
//! # });
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Deserializer, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Why the emulator could not start or take a control update.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmulatorError {
    /// Binding the listen address failed.
    #[error("binding the emulator to {addr} failed")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A control value is out of range.
    #[error("invalid control value: {0}")]
    InvalidControl(String),
}

/// How the emulated replica behaves; fixed at start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmulatorOptions {
    /// The served model name (the `model_name` label).
    pub model_name: String,
    /// Data-parallel engines (V1 `engine` label values `0..engines`); ignored with V0 names.
    pub engines: u32,
    /// Serve the V0 metric names and buckets instead of V1's.
    pub v0_names: bool,
    /// Requests that run at once, over all engines (vLLM `--max-num-seqs`).
    pub max_batch: f64,
    /// Seconds a request occupies a batch slot (the replica serves `max_batch /
    /// service_secs` requests per second); keep it near `base_ttft_ms + tokens_per_request
    /// × base_itl_ms`, the end-to-end latency reported at light load.
    pub service_secs: f64,
    /// Time to first token at light load, milliseconds.
    pub base_ttft_ms: f64,
    /// Inter-token latency at light load, milliseconds.
    pub base_itl_ms: f64,
    /// Generated tokens per request.
    pub tokens_per_request: f64,
    /// Seed of the latency jitter.
    pub seed: u64,
    /// The load at start.
    pub load: Load,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            model_name: "meta-llama/Llama-3.1-8B-Instruct".to_owned(),
            engines: 1,
            v0_names: false,
            max_batch: 16.0,
            service_secs: 2.0,
            base_ttft_ms: 60.0,
            base_itl_ms: 15.0,
            tokens_per_request: 128.0,
            seed: 1,
            load: Load::default(),
        }
    }
}

/// The load being served, and overrides that pin a gauge or a latency.
///
/// Overrides pin what the page reports (gauges) or what every newly finished request is
/// observed at (latencies, without jitter), whatever the model computes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Load {
    /// Requests arriving per second.
    pub request_rate: f64,
    /// Pins `vllm:num_requests_waiting` (summed over engines).
    pub queue_length: Option<f64>,
    /// Pins `vllm:num_requests_running` (summed over engines).
    pub running: Option<f64>,
    /// Pins KV-cache usage, as the 0–1 fraction vLLM exposes.
    pub kv_cache_usage: Option<f64>,
    /// Pins the end-to-end latency of newly finished requests, milliseconds.
    pub e2e_ms: Option<f64>,
    /// Pins their time to first token, milliseconds.
    pub ttft_ms: Option<f64>,
    /// Pins their inter-token latency, milliseconds.
    pub itl_ms: Option<f64>,
    /// Pins their time in the queue, milliseconds.
    pub queue_time_ms: Option<f64>,
    /// Makes `/metrics` misbehave.
    pub fault: Fault,
}

/// How `/metrics` misbehaves (the control endpoint always works).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
#[non_exhaustive]
pub enum Fault {
    /// Serve the page.
    #[default]
    None,
    /// Serve text that is not an exposition page.
    Garbage,
    /// Answer HTTP 500.
    ServerError,
    /// Never answer.
    Hang,
    /// Close the connection without answering.
    Drop,
    /// Serve the page after a delay.
    Delay {
        /// The delay, milliseconds.
        ms: u64,
    },
    /// Serve the page followed by comment lines up to `bytes` in all, streamed in 64 KiB
    /// chunks with no `Content-Length` (`u64::MAX`: a page that never ends).
    Huge {
        /// The page's size, bytes.
        bytes: u64,
    },
    /// Answer `302 Found` with `Location: http://127.0.0.1:<port>/metrics`.
    Redirect {
        /// The port the redirect names.
        port: u16,
    },
}

/// A partial change of [`Load`]: absent fields keep their value; for overrides, JSON
/// `null` (`Some(None)`) clears the override.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ControlUpdate {
    /// New request rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<f64>,
    /// Set or clear the queue-length override.
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub queue_length: Option<Option<f64>>,
    /// Set or clear the running override.
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub running: Option<Option<f64>>,
    /// Set or clear the KV-cache usage override (0–1 fraction).
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub kv_cache_usage: Option<Option<f64>>,
    /// Set or clear the e2e latency override (ms).
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub e2e_ms: Option<Option<f64>>,
    /// Set or clear the TTFT override (ms).
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<Option<f64>>,
    /// Set or clear the ITL override (ms).
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub itl_ms: Option<Option<f64>>,
    /// Set or clear the queue-time override (ms).
    #[serde(deserialize_with = "double", skip_serializing_if = "Option::is_none")]
    pub queue_time_ms: Option<Option<f64>>,
    /// New fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<Fault>,
}

fn double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<f64>>, D::Error> {
    Option::<f64>::deserialize(d).map(Some)
}

impl Load {
    fn apply(&mut self, u: &ControlUpdate) -> Result<(), EmulatorError> {
        let mut next = self.clone();
        if let Some(r) = u.request_rate {
            next.request_rate = r;
        }
        for (slot, value) in [
            (&mut next.queue_length, u.queue_length),
            (&mut next.running, u.running),
            (&mut next.kv_cache_usage, u.kv_cache_usage),
            (&mut next.e2e_ms, u.e2e_ms),
            (&mut next.ttft_ms, u.ttft_ms),
            (&mut next.itl_ms, u.itl_ms),
            (&mut next.queue_time_ms, u.queue_time_ms),
        ] {
            if let Some(v) = value {
                *slot = v;
            }
        }
        if let Some(f) = u.fault {
            next.fault = f;
        }
        next.validate()?;
        *self = next;
        Ok(())
    }

    fn validate(&self) -> Result<(), EmulatorError> {
        let bad =
            |what: &str, v: f64| EmulatorError::InvalidControl(format!("{what} must be finite and >= 0, got {v}"));
        if !(self.request_rate.is_finite() && self.request_rate >= 0.0) {
            return Err(bad("request_rate", self.request_rate));
        }
        for (what, v) in [
            ("queue_length", self.queue_length),
            ("running", self.running),
            ("e2e_ms", self.e2e_ms),
            ("ttft_ms", self.ttft_ms),
            ("itl_ms", self.itl_ms),
            ("queue_time_ms", self.queue_time_ms),
        ] {
            if let Some(v) = v.filter(|v| !(v.is_finite() && *v >= 0.0)) {
                return Err(bad(what, v));
            }
        }
        if let Some(v) = self.kv_cache_usage.filter(|v| !(v.is_finite() && (0.0..=1.0).contains(v))) {
            return Err(EmulatorError::InvalidControl(format!(
                "kv_cache_usage is the 0-1 fraction vLLM exposes, got {v}"
            )));
        }
        Ok(())
    }
}

impl EmulatorOptions {
    fn validate(&self) -> Result<(), EmulatorError> {
        let positive = |what: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(EmulatorError::InvalidControl(format!("{what} must be a positive number, got {v}")))
            }
        };
        positive("max_batch", self.max_batch)?;
        positive("service_secs", self.service_secs)?;
        positive("base_ttft_ms", self.base_ttft_ms)?;
        positive("base_itl_ms", self.base_itl_ms)?;
        positive("tokens_per_request", self.tokens_per_request)?;
        if self.engines == 0 || self.engines > 64 {
            return Err(EmulatorError::InvalidControl(format!("engines must be 1..=64, got {}", self.engines)));
        }
        self.load.validate()
    }
}

/// What the emulated replica is serving right now (summed over engines).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// `vllm:num_requests_waiting` as shown.
    pub queue_length: f64,
    /// `vllm:num_requests_running` as shown.
    pub running: f64,
    /// KV-cache usage as shown (0–1 fraction, max over engines).
    pub kv_cache_usage: f64,
    /// Requests finished since start.
    pub requests_finished: u64,
    /// Generated tokens since start.
    pub generation_tokens: f64,
    /// Seconds of simulated time since start.
    pub uptime_secs: f64,
}

/// `GET /control`: the options, the load and what is served.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// The options the emulator started with.
    pub options: EmulatorOptions,
    /// The current load and overrides.
    pub load: Load,
    /// What the page shows.
    pub served: Served,
}

/// V1 bucket boundaries (vllm/v1/metrics/loggers.py).
const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
    160.0, 640.0, 2560.0,
];
const ITL_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0];
const REQUEST_BUCKETS: &[f64] = &[
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0,
    1920.0, 7680.0,
];
/// V0 (about v0.5) boundaries.
const V0_TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
const V0_TPOT_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5];
const V0_E2E_BUCKETS: &[f64] = &[1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0];

#[derive(Clone, Debug)]
struct Hist {
    bounds: &'static [f64],
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Hist {
    fn new(bounds: &'static [f64]) -> Self {
        Self { bounds, counts: vec![0; bounds.len()], sum: 0.0, count: 0 }
    }

    fn observe(&mut self, secs: f64) {
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i] += 1;
        }
        self.sum += secs;
        self.count += 1;
    }
}

#[derive(Clone, Debug)]
struct EngineSim {
    arrivals_frac: f64,
    finished_frac: f64,
    waiting: f64,
    running: f64,
    prompt_tokens: f64,
    generation_tokens: f64,
    success: [u64; 3],
    preemptions: u64,
    e2e: Hist,
    ttft: Hist,
    itl: Hist,
    queue: Hist,
    created: f64,
}

/// The pure simulation behind the server: a fluid queue per engine, stepped in fixed ticks.
#[derive(Clone, Debug)]
struct Sim {
    options: EmulatorOptions,
    load: Load,
    engines: Vec<EngineSim>,
    elapsed_secs: f64,
    rng: u64,
    finished: u64,
}

const TICK_SECS: f64 = 0.05;

impl Sim {
    fn new(options: EmulatorOptions, created_unix: f64) -> Self {
        let n = if options.v0_names { 1 } else { options.engines.max(1) };
        let (ttft, itl, req) = if options.v0_names {
            (V0_TTFT_BUCKETS, V0_TPOT_BUCKETS, V0_E2E_BUCKETS)
        } else {
            (TTFT_BUCKETS, ITL_BUCKETS, REQUEST_BUCKETS)
        };
        let engine = EngineSim {
            arrivals_frac: 0.0,
            finished_frac: 0.0,
            waiting: 0.0,
            running: 0.0,
            prompt_tokens: 0.0,
            generation_tokens: 0.0,
            success: [0; 3],
            preemptions: 0,
            e2e: Hist::new(req),
            ttft: Hist::new(ttft),
            itl: Hist::new(itl),
            queue: Hist::new(if options.v0_names { V0_E2E_BUCKETS } else { REQUEST_BUCKETS }),
            created: created_unix,
        };
        let rng = options.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        Self {
            load: options.load.clone(),
            engines: vec![engine; n as usize],
            options,
            elapsed_secs: 0.0,
            rng,
            finished: 0,
        }
    }

    /// A jitter factor in [0.9, 1.1] (xorshift64*).
    fn jitter(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        0.9 + 0.2 * (x as f64 / (1u64 << 53) as f64)
    }

    fn advance(&mut self, secs: f64) {
        // A long pause (a laptop sleeping) is not replayed tick by tick.
        let secs = secs.min(600.0);
        let mut left = secs;
        while left > 1e-9 {
            let dt = left.min(TICK_SECS);
            self.tick(dt);
            left -= dt;
        }
    }

    fn tick(&mut self, dt: f64) {
        self.elapsed_secs += dt;
        let n = self.engines.len() as f64;
        let batch = self.options.max_batch / n;
        let service = self.options.service_secs;
        let rate = self.load.request_rate / n;
        for e in 0..self.engines.len() {
            let (done, queue_secs, load_ratio) = {
                let eng = &mut self.engines[e];
                eng.arrivals_frac += rate * dt;
                let arrived = eng.arrivals_frac.floor();
                eng.arrivals_frac -= arrived;
                eng.waiting += arrived;
                // Processor sharing: each running request finishes after `service` seconds.
                eng.finished_frac += eng.running * dt / service;
                let done = eng.finished_frac.floor().min(eng.running.ceil());
                eng.finished_frac -= done;
                eng.running = (eng.running - done).max(0.0);
                // The scheduler refills the batch from the queue.
                let admit = (batch - eng.running).clamp(0.0, eng.waiting);
                eng.waiting -= admit;
                eng.running += admit;
                // Little's law: the wait of a request joining now.
                let throughput = batch / service;
                (done as u64, eng.waiting / throughput, eng.running / batch)
            };
            for _ in 0..done {
                let j = [self.jitter(), self.jitter(), self.jitter()];
                let queue_ms = self.load.queue_time_ms.unwrap_or(queue_secs * 1000.0 * j[0]);
                let ttft_ms =
                    self.load.ttft_ms.unwrap_or(self.options.base_ttft_ms * (1.0 + load_ratio) * j[1] + queue_ms);
                let itl_ms = self.load.itl_ms.unwrap_or(self.options.base_itl_ms * (1.0 + load_ratio) * j[2]);
                let tokens = self.options.tokens_per_request;
                // What vLLM's histogram measures: the first token (queue time included),
                // then one inter-token gap per further token. Both grow with the batch, so a
                // saturated replica's requests take longer than an idle one's.
                let e2e_ms = self.load.e2e_ms.unwrap_or(ttft_ms + (tokens - 1.0).max(0.0) * itl_ms);
                let length_cut = self.rng.is_multiple_of(10);
                let eng = &mut self.engines[e];
                eng.queue.observe(queue_ms / 1000.0);
                eng.ttft.observe(ttft_ms / 1000.0);
                eng.itl.observe(itl_ms / 1000.0);
                eng.e2e.observe(e2e_ms / 1000.0);
                eng.generation_tokens += tokens;
                eng.prompt_tokens += 4.0 * tokens;
                eng.success[usize::from(length_cut)] += 1;
                if load_ratio > 0.95 && length_cut {
                    eng.preemptions += 1;
                }
                self.finished += 1;
            }
        }
    }

    fn served(&self) -> Served {
        let running: f64 = self.engines.iter().map(|e| e.running.round()).sum();
        let waiting: f64 = self.engines.iter().map(|e| e.waiting.round()).sum();
        let batch = self.options.max_batch / self.engines.len() as f64;
        let kv = self.engines.iter().map(|e| kv_fraction(e.running, batch)).fold(0.0, f64::max);
        Served {
            queue_length: self.load.queue_length.unwrap_or(waiting),
            running: self.load.running.unwrap_or(running),
            kv_cache_usage: self.load.kv_cache_usage.unwrap_or(kv),
            requests_finished: self.finished,
            generation_tokens: self.engines.iter().map(|e| e.generation_tokens).sum(),
            uptime_secs: self.elapsed_secs,
        }
    }

    /// The page. Pinned gauges are split evenly over engines so that sums match the pin.
    fn render(&self, out: &mut String) {
        let v0 = self.options.v0_names;
        let n = self.engines.len();
        let model = escape(&self.options.model_name);
        let labels: Vec<String> =
            (0..n)
                .map(|i| {
                    if v0 {
                        format!("model_name=\"{model}\"")
                    } else {
                        format!("engine=\"{i}\",model_name=\"{model}\"")
                    }
                })
                .collect();
        let batch = self.options.max_batch / n as f64;
        let split = |pin: Option<f64>, own: &dyn Fn(&EngineSim) -> f64| -> Vec<f64> {
            match pin {
                Some(v) => (0..n).map(|_| v / n as f64).collect(),
                None => self.engines.iter().map(own).collect(),
            }
        };
        let gauge = |out: &mut String, name: &str, help: &str, values: &[f64]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (l, v) in labels.iter().zip(values) {
                let _ = writeln!(out, "{name}{{{l}}} {}", fmt_f(*v));
            }
        };
        let running = split(self.load.running, &|e| e.running.round());
        let waiting = split(self.load.queue_length, &|e| e.waiting.round());
        let kv: Vec<f64> = match self.load.kv_cache_usage {
            Some(v) => vec![v; n],
            None => self.engines.iter().map(|e| kv_fraction(e.running, batch)).collect(),
        };
        if v0 {
            gauge(out, "vllm:num_requests_running", "Number of requests currently running on GPU.", &running);
            gauge(out, "vllm:num_requests_swapped", "Number of requests swapped to CPU.", &[0.0]);
            gauge(out, "vllm:num_requests_waiting", "Number of requests waiting to be processed.", &waiting);
            gauge(out, "vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage.", &kv);
            gauge(out, "vllm:cpu_cache_usage_perc", "CPU KV-cache usage. 1 means 100 percent usage.", &[0.0]);
        } else {
            gauge(out, "vllm:num_requests_running", "Number of requests in model execution batches.", &running);
            gauge(out, "vllm:num_requests_waiting", "Number of requests waiting to be processed.", &waiting);
            gauge(out, "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", &kv);
        }
        let counter = |out: &mut String, name: &str, help: &str, values: &[(String, f64, f64)]| {
            let _ = writeln!(out, "# HELP {name}_total {help}\n# TYPE {name}_total counter");
            for (l, v, _) in values {
                let _ = writeln!(out, "{name}_total{{{l}}} {}", fmt_f(*v));
            }
            if !v0 {
                // prometheus_client exposes `_created` for V1 counters (V0 disabled them).
                let _ = writeln!(out, "# HELP {name}_created {help}\n# TYPE {name}_created gauge");
                for (l, _, created) in values {
                    let _ = writeln!(out, "{name}_created{{{l}}} {}", fmt_f(*created));
                }
            }
        };
        let per_engine = |f: &dyn Fn(&EngineSim) -> f64| -> Vec<(String, f64, f64)> {
            self.engines.iter().zip(&labels).map(|(e, l)| (l.clone(), f(e), e.created)).collect()
        };
        counter(
            out,
            "vllm:num_preemptions",
            "Cumulative number of preemption from the engine.",
            &per_engine(&|e| e.preemptions as f64),
        );
        counter(out, "vllm:prompt_tokens", "Number of prefill tokens processed.", &per_engine(&|e| e.prompt_tokens));
        counter(
            out,
            "vllm:generation_tokens",
            "Number of generation tokens processed.",
            &per_engine(&|e| e.generation_tokens),
        );
        let mut success = Vec::new();
        for (e, l) in self.engines.iter().zip(&labels) {
            for (k, reason) in ["stop", "length", "abort"].iter().enumerate() {
                let labels = if v0 {
                    format!("finished_reason=\"{reason}\",{l}")
                } else {
                    // Sorted label names: engine, finished_reason, model_name.
                    let (engine, rest) = l.split_once(',').unwrap_or((l.as_str(), ""));
                    format!("{engine},finished_reason=\"{reason}\",{rest}")
                };
                success.push((labels, if k < 2 { e.success[k] as f64 } else { 0.0 }, e.created));
            }
        }
        counter(out, "vllm:request_success", "Count of successfully processed requests.", &success);
        let hist = |out: &mut String, name: &str, help: &str, get: &dyn Fn(&EngineSim) -> &Hist| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for (e, l) in self.engines.iter().zip(&labels) {
                let h = get(e);
                let _ = writeln!(out, "{name}_sum{{{l}}} {}", fmt_f(h.sum));
                let mut cumulative = 0u64;
                let (engine, rest) = if v0 { ("", l.as_str()) } else { l.split_once(',').unwrap_or(("", l.as_str())) };
                let prefix = if engine.is_empty() { String::new() } else { format!("{engine},") };
                for (b, c) in h.bounds.iter().zip(&h.counts) {
                    cumulative += c;
                    let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"{}\",{rest}}} {cumulative}.0", fmt_f(*b));
                }
                let _ = writeln!(out, "{name}_bucket{{{prefix}le=\"+Inf\",{rest}}} {}.0", h.count);
                let _ = writeln!(out, "{name}_count{{{l}}} {}.0", h.count);
            }
            if !v0 {
                let _ = writeln!(out, "# HELP {name}_created {help}\n# TYPE {name}_created gauge");
                for (e, l) in self.engines.iter().zip(&labels) {
                    let _ = writeln!(out, "{name}_created{{{l}}} {}", fmt_f(e.created));
                }
            }
        };
        hist(out, "vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", &|e| &e.ttft);
        if v0 {
            hist(out, "vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds.", &|e| {
                &e.itl
            });
        } else {
            hist(out, "vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", &|e| &e.itl);
        }
        hist(out, "vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", &|e| &e.e2e);
        if !v0 {
            hist(
                out,
                "vllm:request_queue_time_seconds",
                "Histogram of time spent in WAITING phase for request.",
                &|e| &e.queue,
            );
        }
    }
}

fn kv_fraction(running: f64, batch: f64) -> f64 {
    (0.02 + 0.93 * running / batch).min(1.0)
}

/// Python's float repr as vLLM's client prints it: `3.0`, `0.25`, `1.7e+09`.
fn fmt_f(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.1}") } else { format!("{v}") }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Shared {
    sim: Sim,
    last: Instant,
}

impl Shared {
    fn advance(&mut self) {
        let now = Instant::now();
        let secs = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.sim.advance(secs);
    }

    fn state(&mut self) -> ControlState {
        self.advance();
        ControlState { options: self.sim.options.clone(), load: self.sim.load.clone(), served: self.sim.served() }
    }
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A running emulator; the server stops when this is dropped or [`Emulator::shutdown`] is called.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("load", &self.sim.load).finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `addr` (port 0 picks a free port) and serves in a task on the current tokio runtime.
    ///
    /// # Errors
    /// When the options are out of range or the address cannot be bound.
    pub async fn start(addr: SocketAddr, options: EmulatorOptions) -> Result<Self, EmulatorError> {
        options.validate()?;
        let listener = TcpListener::bind(addr).await.map_err(|source| EmulatorError::Bind { addr, source })?;
        let addr = listener.local_addr().map_err(|source| EmulatorError::Bind { addr, source })?;
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| (d.as_secs_f64() * 1000.0).round() / 1000.0);
        let shared = Arc::new(Mutex::new(Shared { sim: Sim::new(options, created), last: Instant::now() }));
        let task = tokio::spawn(serve(listener, Arc::clone(&shared)));
        Ok(Self { addr, shared, task })
    }

    /// The address it listens on.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR` (no trailing slash).
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://ADDR/metrics`.
    #[must_use]
    pub fn metrics_url(&self) -> String {
        format!("{}/metrics", self.url())
    }

    /// Changes the load, as `POST /control` does, and returns the new state.
    ///
    /// # Errors
    /// When a value is out of range (nothing is changed then).
    pub fn control(&self, update: ControlUpdate) -> Result<ControlState, EmulatorError> {
        let mut s = lock(&self.shared);
        s.advance();
        s.sim.load.apply(&update)?;
        Ok(s.state())
    }

    /// The current state, as `GET /control` shows it.
    #[must_use]
    pub fn state(&self) -> ControlState {
        lock(&self.shared).state()
    }

    /// The page `/metrics` would serve now (ignoring any fault).
    #[must_use]
    pub fn render(&self) -> String {
        let mut s = lock(&self.shared);
        s.advance();
        let mut out = String::with_capacity(16 * 1024);
        s.sim.render(&mut out);
        out
    }

    /// Stops the server and closes its connections.
    pub async fn shutdown(self) {
        self.task.abort();
        let _ = (&mut { self }.task).await;
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    // Connections live in the set, so aborting this task closes them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors, say: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let shared = Arc::clone(&shared);
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&shared)));
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// The error that makes hyper drop a connection without answering ([`Fault::Drop`]).
#[derive(Debug, thiserror::Error)]
#[error("connection dropped on purpose")]
struct DroppedOnPurpose;

type Reply = Response<UnsyncBoxBody<Bytes, std::convert::Infallible>>;

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json(status: StatusCode, value: &impl Serialize) -> Reply {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => reply(status, "application/json", body),
        Err(e) => reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", e.to_string()),
    }
}

/// `page`, then `# padding` comment lines up to `total` bytes, in 64 KiB chunks.
fn huge_reply(page: String, total: u64) -> Reply {
    const CHUNK: usize = 64 * 1024;
    let mut padding = String::with_capacity(CHUNK);
    while padding.len() + 64 <= CHUNK {
        padding.push_str("# padding padding padding padding padding padding padding pad\n");
    }
    let padding = Bytes::from(padding);
    let first = Bytes::from(page);
    let stream = futures::stream::unfold((0u64, Some(first)), move |(sent, first)| {
        let padding = padding.clone();
        async move {
            let chunk = match first {
                Some(page) => page,
                None if sent >= total => return None,
                None => {
                    let left = usize::try_from(total - sent).unwrap_or(usize::MAX);
                    padding.slice(..padding.len().min(left))
                }
            };
            let sent = sent.saturating_add(chunk.len() as u64);
            Some((Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)), (sent, None)))
        }
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

async fn handle(req: Request<Incoming>, shared: Arc<Mutex<Shared>>) -> Result<Reply, DroppedOnPurpose> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let (fault, page) = {
                let mut s = lock(&shared);
                s.advance();
                let mut page = String::with_capacity(16 * 1024);
                s.sim.render(&mut page);
                (s.sim.load.fault, page)
            };
            match fault {
                Fault::None => Ok(reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", page)),
                Fault::Garbage => Ok(reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    "<html><body>502 Bad Gateway</body></html>\nvllm:num_requests_waiting{model_name=\"m\" 3\n",
                )),
                Fault::ServerError => {
                    Ok(reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain", "emulated internal server error\n"))
                }
                Fault::Hang => {
                    std::future::pending::<()>().await;
                    Err(DroppedOnPurpose)
                }
                Fault::Drop => Err(DroppedOnPurpose),
                Fault::Delay { ms } => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok(reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", page))
                }
                Fault::Huge { bytes } => Ok(huge_reply(page, bytes)),
                Fault::Redirect { port } => {
                    let mut r = reply(StatusCode::FOUND, "text/plain", "moved\n");
                    if let Ok(v) = hyper::header::HeaderValue::from_str(&format!("http://127.0.0.1:{port}/metrics")) {
                        r.headers_mut().insert(hyper::header::LOCATION, v);
                    }
                    Ok(r)
                }
            }
        }
        (&Method::GET, "/control") => Ok(json(StatusCode::OK, &lock(&shared).state())),
        (&Method::POST, "/control") => {
            let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(reply(StatusCode::BAD_REQUEST, "text/plain", format!("reading the body failed: {e}\n")));
                }
            };
            let update: ControlUpdate = match serde_json::from_slice(&body) {
                Ok(u) => u,
                Err(e) => {
                    return Ok(reply(
                        StatusCode::BAD_REQUEST,
                        "text/plain",
                        format!("POST /control wants a JSON object like {{\"request_rate\": 20}}: {e}\n"),
                    ));
                }
            };
            let mut s = lock(&shared);
            s.advance();
            match s.sim.load.apply(&update) {
                Ok(()) => Ok(json(StatusCode::OK, &s.state())),
                Err(e) => Ok(reply(StatusCode::BAD_REQUEST, "text/plain", format!("{e}\n"))),
            }
        }
        (&Method::GET, "/health") => Ok(reply(StatusCode::OK, "text/plain", "")),
        _ => Ok(reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "the vLLM emulator serves GET /metrics, GET /health, GET and POST /control\n",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;

    fn sim(options: EmulatorOptions) -> Sim {
        Sim::new(options, 1_754_321_012.5)
    }

    fn sum(page: &str, name: &str) -> f64 {
        parse(page).unwrap().samples_named(name).map(|s| s.value).sum()
    }

    #[test]
    fn idle_page_parses_and_has_v1_names() {
        let s = sim(EmulatorOptions { engines: 2, ..Default::default() });
        let mut page = String::new();
        s.render(&mut page);
        let e = parse(&page).unwrap_or_else(|err| panic!("{err}\n{page}"));
        assert_eq!(e.samples_named("vllm:num_requests_waiting").count(), 2);
        assert!(e.samples_named("vllm:kv_cache_usage_perc").all(|x| x.label("engine").is_some()));
        assert_eq!(e.samples_named("vllm:generation_tokens_created").count(), 2);
        assert_eq!(e.samples_named("vllm:inter_token_latency_seconds_bucket").count(), 2 * (ITL_BUCKETS.len() + 1));
        assert_eq!(e.samples_named("vllm:gpu_cache_usage_perc").count(), 0);
        // Label names are sorted, as prometheus_client writes them.
        let b = e.samples_named("vllm:time_to_first_token_seconds_bucket").next().unwrap();
        let names: Vec<_> = b.labels.iter().map(|l| l.name.to_string()).collect();
        assert_eq!(names, ["engine", "le", "model_name"]);
    }

    #[test]
    fn v0_names() {
        let s = sim(EmulatorOptions { v0_names: true, engines: 4, ..Default::default() });
        let mut page = String::new();
        s.render(&mut page);
        let e = parse(&page).unwrap();
        assert_eq!(e.samples_named("vllm:gpu_cache_usage_perc").count(), 1);
        assert_eq!(e.samples_named("vllm:time_per_output_token_seconds_count").count(), 1);
        assert!(e.samples().all(|x| x.label("engine").is_none()));
        assert_eq!(e.samples().filter(|x| x.name.ends_with("_created")).count(), 0);
    }

    #[test]
    fn overload_builds_a_queue_and_light_load_does_not() {
        let options = EmulatorOptions::default(); // 16 slots x 2 s = 8 req/s
        let mut light =
            sim(EmulatorOptions { load: Load { request_rate: 2.0, ..Default::default() }, ..options.clone() });
        light.advance(60.0);
        let served = light.served();
        assert_eq!(served.queue_length, 0.0);
        assert!((2.0..=7.0).contains(&served.running), "{served:?}");
        assert!((100..=130).contains(&served.requests_finished), "{served:?}");

        let mut heavy = sim(EmulatorOptions { load: Load { request_rate: 12.0, ..Default::default() }, ..options });
        heavy.advance(30.0);
        let served = heavy.served();
        assert_eq!(served.running, 16.0);
        assert!(served.queue_length > 100.0, "{served:?}");
        assert!(served.kv_cache_usage > 0.9);
    }

    #[test]
    fn end_to_end_latency_is_first_token_plus_decode_and_grows_with_the_batch() {
        let mean_e2e_ms = |options: EmulatorOptions, rate: f64| {
            let mut s = sim(EmulatorOptions { load: Load { request_rate: rate, ..Default::default() }, ..options });
            s.advance(40.0);
            let mut page = String::new();
            s.render(&mut page);
            assert_eq!(sum(&page, "vllm:num_requests_waiting"), 0.0, "no queue at {rate} req/s");
            1000.0 * sum(&page, "vllm:e2e_request_latency_seconds_sum")
                / sum(&page, "vllm:e2e_request_latency_seconds_count")
        };
        // 60 ms to the first token, then 127 gaps of 15 ms, at light load.
        let defaults = EmulatorOptions::default();
        let light = mean_e2e_ms(defaults.clone(), 0.5);
        assert!((1900.0..2200.0).contains(&light), "{light}");
        // The batch nearly full (7 of 8 req/s): every token comes slower, and so does the answer.
        let busy = mean_e2e_ms(defaults, 7.0);
        assert!(busy > 1.5 * light, "{busy} vs {light}");
        // `emulate-vllm`'s short answers (32 tokens, 0.5 s slots): under the seed example's
        // `latency: 1000` when lightly loaded, over it when the batch is full.
        let short = EmulatorOptions { tokens_per_request: 32.0, service_secs: 0.5, ..EmulatorOptions::default() };
        let light = mean_e2e_ms(short.clone(), 4.0);
        assert!((500.0..700.0).contains(&light), "{light}");
        let full = mean_e2e_ms(short, 31.0);
        assert!(full > 1000.0, "{full}");
    }

    #[test]
    fn histograms_grow_with_finished_requests_and_pins_hold() {
        let mut s = sim(EmulatorOptions {
            engines: 2,
            load: Load { request_rate: 4.0, ttft_ms: Some(900.0), queue_length: Some(7.0), ..Default::default() },
            ..Default::default()
        });
        s.advance(10.0);
        let mut page = String::new();
        s.render(&mut page);
        let count = sum(&page, "vllm:time_to_first_token_seconds_count");
        assert_eq!(count, s.finished as f64);
        assert!(count >= 30.0);
        assert_eq!(sum(&page, "vllm:num_requests_waiting"), 7.0);
        let e = parse(&page).unwrap();
        // Every TTFT was pinned at 0.9 s: all in the (0.75, 1.0] bucket.
        let at = |le: &str| -> f64 {
            e.samples_named("vllm:time_to_first_token_seconds_bucket")
                .filter(|x| x.label("le") == Some(le))
                .map(|x| x.value)
                .sum()
        };
        assert_eq!(at("0.75"), 0.0);
        assert_eq!(at("1.0"), count);
        assert_eq!(sum(&page, "vllm:generation_tokens_total"), count * 128.0);
    }

    #[test]
    fn control_updates_validate_and_clear() {
        let mut load = Load::default();
        let u: ControlUpdate = serde_json::from_str(r#"{"request_rate": 3, "kv_cache_usage": 0.5}"#).unwrap();
        load.apply(&u).unwrap();
        assert_eq!((load.request_rate, load.kv_cache_usage), (3.0, Some(0.5)));
        let u: ControlUpdate = serde_json::from_str(r#"{"kv_cache_usage": null}"#).unwrap();
        load.apply(&u).unwrap();
        assert_eq!((load.request_rate, load.kv_cache_usage), (3.0, None));
        let err = load.apply(&ControlUpdate { kv_cache_usage: Some(Some(42.0)), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("0-1 fraction"), "{err}");
        assert!(load.apply(&ControlUpdate { request_rate: Some(-1.0), ..Default::default() }).is_err());
        assert_eq!(load.request_rate, 3.0, "a rejected update changes nothing");
        let u: ControlUpdate = serde_json::from_str(r#"{"fault": {"kind": "delay", "ms": 50}}"#).unwrap();
        load.apply(&u).unwrap();
        assert_eq!(load.fault, Fault::Delay { ms: 50 });
        assert!(serde_json::from_str::<ControlUpdate>(r#"{"rate": 3}"#).is_err());
    }
}
