//! One vLLM replica: a waiting queue, a running batch, and the step loop of continuous
//! batching with chunked prefill, advanced lazily and exactly to any time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::ledger::Ledger;
use super::model::ReplicaModel;
use super::trace::TraceRequest;

/// Where a replica is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Created by a scale-up, not serving until `ready_at` (the cold start).
    Starting,
    /// Serving.
    Ready,
    /// Removed by a scale-down: takes no new requests, finishes what it holds.
    Draining,
    /// Gone.
    Stopped,
}

/// A step that has started and not yet finished.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    end: f64,
    duration: f64,
    decoding: usize,
}

#[derive(Clone, Debug)]
pub(crate) struct Replica {
    pub(crate) id: u32,
    pub(crate) phase: Phase,
    pub(crate) created_at: f64,
    pub(crate) ready_at: f64,
    pub(crate) stopped_at: Option<f64>,
    /// The end of the last finished step (or the last idle instant).
    clock: f64,
    waiting: VecDeque<u32>,
    /// Admitted requests still in prefill, with their remaining prompt tokens (FIFO).
    prefilling: VecDeque<(u32, u32)>,
    /// Decoding requests by the step count at which they finish.
    decoding: BinaryHeap<Reverse<(u64, u32)>>,
    /// Decode steps taken so far.
    steps: u64,
    in_flight: Option<InFlight>,
    kv_reserved: u64,
    /// Prompt tokens of admitted requests, and the step counts at which decoding
    /// requests joined: together they give the KV tokens actually in use.
    kv_prompt_tokens: u64,
    decode_join_sum: u64,
    /// Prompt tokens of the decoding requests alone (what the attention term reads, with
    /// the tokens they generated).
    decode_prompt_tokens: u64,
    pub(crate) busy_secs: f64,
    pub(crate) completed: u64,
    pub(crate) generated_tokens: u64,
}

impl Replica {
    pub(crate) fn new(id: u32, created_at: f64, ready_at: f64) -> Self {
        let phase = if ready_at <= created_at { Phase::Ready } else { Phase::Starting };
        Self {
            id,
            phase,
            created_at,
            ready_at,
            stopped_at: None,
            clock: ready_at,
            waiting: VecDeque::new(),
            prefilling: VecDeque::new(),
            decoding: BinaryHeap::new(),
            steps: 0,
            in_flight: None,
            kv_reserved: 0,
            kv_prompt_tokens: 0,
            decode_join_sum: 0,
            decode_prompt_tokens: 0,
            busy_secs: 0.0,
            completed: 0,
            generated_tokens: 0,
        }
    }

    /// Requests waiting for admission.
    pub(crate) fn waiting_len(&self) -> usize {
        self.waiting.len()
    }

    /// Requests in the running batch (prefilling or decoding).
    pub(crate) fn running_len(&self) -> usize {
        self.prefilling.len() + self.decoding.len()
    }

    /// Waiting plus running: what a load-aware router balances.
    pub(crate) fn outstanding(&self) -> usize {
        self.waiting.len() + self.running_len()
    }

    /// KV cache in use, percent of capacity.
    pub(crate) fn kv_usage_percent(&self, model: &ReplicaModel) -> f64 {
        let n = self.decoding.len() as u64;
        // Each decoding request holds its prompt plus 1 + (steps - join) generated tokens.
        let generated = n + n * self.steps - self.decode_join_sum;
        100.0 * (self.kv_prompt_tokens + generated) as f64 / model.kv_cache_tokens as f64
    }

    /// KV tokens held by the decoding requests: each holds its prompt plus
    /// 1 + (steps - join) generated tokens.
    fn decode_context_tokens(&self) -> u64 {
        let n = self.decoding.len() as u64;
        self.decode_prompt_tokens + n + n * self.steps - self.decode_join_sum
    }

    fn is_idle(&self) -> bool {
        self.prefilling.is_empty() && self.decoding.is_empty() && self.in_flight.is_none()
    }

    /// Queues a request that arrived at `now` (the replica must have been advanced to `now`).
    pub(crate) fn enqueue(&mut self, id: u32) {
        self.waiting.push_back(id);
    }

    /// Runs every step that finishes by `t`, recording first tokens and completions.
    /// Exact whatever the calling pattern: a step's batch is fixed when it starts, and
    /// only requests that arrived by then can join it.
    pub(crate) fn advance_to(&mut self, t: f64, model: &ReplicaModel, reqs: &[TraceRequest], ledger: &mut Ledger) {
        if matches!(self.phase, Phase::Starting | Phase::Stopped) {
            return;
        }
        loop {
            if let Some(step) = self.in_flight {
                if step.end > t {
                    return;
                }
                self.in_flight = None;
                self.finish_step(step, model, reqs, ledger);
                continue;
            }
            if self.is_idle() {
                if self.phase == Phase::Draining && self.waiting.is_empty() {
                    self.phase = Phase::Stopped;
                    self.stopped_at = Some(self.clock);
                    return;
                }
                match self.waiting.front() {
                    Some(&id) if reqs[id as usize].arrival_secs <= t => {
                        self.clock = self.clock.max(reqs[id as usize].arrival_secs);
                    }
                    _ => {
                        if t.is_finite() {
                            self.clock = self.clock.max(t);
                        }
                        return;
                    }
                }
            }
            // A step starting exactly at `t` is planned later, so that every request
            // arriving at `t` can join it.
            if self.clock >= t || !self.start_step(t, model, reqs, ledger) {
                return;
            }
        }
    }

    /// Plans the step starting at `self.clock`. Pure-decode stretches are run in one go
    /// up to the next event. Returns false when nothing more can happen by `t`.
    fn start_step(&mut self, t: f64, model: &ReplicaModel, reqs: &[TraceRequest], ledger: &mut Ledger) -> bool {
        let decoding = self.decoding.len();
        let budget = model.max_batched_tokens.saturating_sub(decoding as u32);
        let mut tokens = 0u32;
        let mut prefill_seqs = 0usize;
        for (_, remaining) in self.prefilling.iter_mut() {
            if tokens >= budget {
                break;
            }
            let take = (*remaining).min(budget - tokens);
            *remaining -= take;
            tokens += take;
            prefill_seqs += 1;
        }
        while tokens < budget && self.running_len() < model.max_num_seqs as usize {
            let Some(&id) = self.waiting.front() else { break };
            let req = &reqs[id as usize];
            if req.arrival_secs > self.clock {
                break;
            }
            let need = u64::from(req.input_tokens) + u64::from(req.output_tokens.max(1));
            if self.kv_reserved + need > model.kv_cache_tokens {
                break;
            }
            self.waiting.pop_front();
            self.kv_reserved += need;
            self.kv_prompt_tokens += u64::from(req.input_tokens);
            ledger.on_admit(id as usize, self.clock);
            let take = req.input_tokens.min(budget - tokens);
            tokens += take;
            prefill_seqs += 1;
            self.prefilling.push_back((id, req.input_tokens - take));
        }
        if tokens == 0 && decoding == 0 {
            // Nothing runnable (the head of the queue has not arrived yet).
            return false;
        }
        let context = self.decode_context_tokens();
        let duration = model.step_ms_with_context(tokens, decoding + prefill_seqs, context) / 1000.0;
        if tokens > 0 {
            self.in_flight = Some(InFlight { end: self.clock + duration, duration, decoding });
            return true;
        }
        // A pure-decode stretch: steps until a request finishes, the head of the queue
        // arrives, or `t`. Each step's context grows by one token per decoding sequence,
        // so step `i` (from 0) takes `duration + growth × i`.
        let growth = model.attention_ms_per_context_token * decoding as f64 / 1000.0;
        let stretch = Stretch { first: duration, growth };
        let Some(&Reverse((first_finish, _))) = self.decoding.peek() else { return false };
        let until_finish = first_finish.saturating_sub(self.steps).max(1);
        // A head of the queue that has already arrived is blocked by the KV cache or the
        // batch size, which only a finishing request frees.
        let until_arrival = match self.waiting.front() {
            Some(&id) if budget > 0 && reqs[id as usize].arrival_secs > self.clock => {
                stretch.steps_reaching(reqs[id as usize].arrival_secs - self.clock)
            }
            _ => f64::INFINITY,
        };
        let until_t = stretch.steps_within(t - self.clock);
        let k = (until_finish as f64).min(until_arrival).min(until_t);
        if k < 1.0 {
            self.in_flight = Some(InFlight { end: self.clock + duration, duration, decoding });
            return true;
        }
        let k = k as u64;
        let start = self.clock;
        let start_steps = self.steps;
        let span = stretch.elapsed(k);
        self.steps += k;
        self.clock = start + span;
        self.busy_secs += span;
        self.generated_tokens += k * decoding as u64;
        while let Some(&Reverse((finish, id))) = self.decoding.peek() {
            if finish > self.steps {
                break;
            }
            self.decoding.pop();
            let at = start + stretch.elapsed(finish - start_steps);
            self.complete(id, finish, at, reqs, ledger);
        }
        true
    }

    fn finish_step(&mut self, step: InFlight, _model: &ReplicaModel, reqs: &[TraceRequest], ledger: &mut Ledger) {
        self.clock = step.end;
        self.busy_secs += step.duration;
        if step.decoding > 0 {
            self.steps += 1;
            self.generated_tokens += step.decoding as u64;
        }
        while let Some(&(id, 0)) = self.prefilling.front() {
            self.prefilling.pop_front();
            let req = &reqs[id as usize];
            ledger.on_first_token(id as usize, req, self.clock);
            self.generated_tokens += 1;
            let remaining = u64::from(req.output_tokens.max(1) - 1);
            self.decode_join_sum += self.steps;
            self.decode_prompt_tokens += u64::from(req.input_tokens);
            self.decoding.push(Reverse((self.steps + remaining, id)));
        }
        while let Some(&Reverse((finish, id))) = self.decoding.peek() {
            if finish > self.steps {
                break;
            }
            self.decoding.pop();
            self.complete(id, finish, self.clock, reqs, ledger);
        }
    }

    fn complete(&mut self, id: u32, finish: u64, at: f64, reqs: &[TraceRequest], ledger: &mut Ledger) {
        let req = &reqs[id as usize];
        let output = u64::from(req.output_tokens.max(1));
        self.decode_join_sum -= finish - (output - 1);
        self.kv_reserved -= u64::from(req.input_tokens) + output;
        self.kv_prompt_tokens -= u64::from(req.input_tokens);
        self.decode_prompt_tokens -= u64::from(req.input_tokens);
        self.completed += 1;
        ledger.on_finish(id as usize, req, at);
    }

    /// Marks the replica as draining (scale-down of a ready replica).
    pub(crate) fn drain(&mut self) {
        self.phase = Phase::Draining;
    }

    /// Stops a replica that never became ready.
    pub(crate) fn cancel(&mut self, now: f64) {
        self.phase = Phase::Stopped;
        self.stopped_at = Some(now);
    }

    /// Makes a starting replica ready.
    pub(crate) fn become_ready(&mut self) {
        self.phase = Phase::Ready;
        self.clock = self.ready_at;
    }

    /// When the step now running ends (`None` when none is).
    pub(crate) fn step_end(&self) -> Option<f64> {
        self.in_flight.map(|s| s.end)
    }

    /// Whether it still holds requests.
    pub(crate) fn has_work(&self) -> bool {
        !self.is_idle() || !self.waiting.is_empty()
    }
}

/// Consecutive decode steps whose duration grows linearly: step `i` (from 0) takes
/// `first + growth × i` seconds. With `growth` 0 every formula is the plain
/// `k × first` one.
#[derive(Clone, Copy, Debug)]
struct Stretch {
    first: f64,
    growth: f64,
}

impl Stretch {
    /// Seconds taken by the first `k` steps.
    fn elapsed(self, k: u64) -> f64 {
        let k = k as f64;
        if self.growth == 0.0 { k * self.first } else { k * self.first + self.growth * k * (k - 1.0) * 0.5 }
    }

    /// The most whole steps that finish within `span` seconds (as a float, for `min`).
    fn steps_within(self, span: f64) -> f64 {
        if self.growth == 0.0 || !span.is_finite() {
            return (span / self.first).floor();
        }
        let mut k = self.root(span).floor().max(0.0) as u64;
        // The closed form can be one off in floating point: settle on the exact answer.
        while k > 0 && self.elapsed(k) > span {
            k -= 1;
        }
        while self.elapsed(k + 1) <= span {
            k += 1;
        }
        k as f64
    }

    /// The fewest steps (at least 1) that reach `span` seconds.
    fn steps_reaching(self, span: f64) -> f64 {
        if self.growth == 0.0 {
            return (span / self.first).ceil().max(1.0);
        }
        let mut k = self.root(span).ceil().max(1.0) as u64;
        while k > 1 && self.elapsed(k - 1) >= span {
            k -= 1;
        }
        while self.elapsed(k) < span {
            k += 1;
        }
        k as f64
    }

    /// The real `k` with `elapsed(k) = span`.
    fn root(self, span: f64) -> f64 {
        // growth/2 k² + (first - growth/2) k - span = 0
        let (a, b) = (0.5 * self.growth, self.first - 0.5 * self.growth);
        (-b + (b * b + 4.0 * a * span).sqrt()) / (2.0 * a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(reqs: &[TraceRequest], model: &ReplicaModel, stride: f64) -> Ledger {
        let mut ledger = Ledger::new(reqs.len());
        let mut r = Replica::new(0, 0.0, 0.0);
        let mut next = 0;
        let mut t = 0.0;
        while next < reqs.len() || r.has_work() {
            t += stride;
            while next < reqs.len() && reqs[next].arrival_secs <= t {
                r.advance_to(reqs[next].arrival_secs, model, reqs, &mut ledger);
                r.enqueue(next as u32);
                next += 1;
            }
            r.advance_to(t, model, reqs, &mut ledger);
            assert!(t < 10_000.0, "livelock");
        }
        ledger
    }

    #[test]
    fn single_request_timeline_matches_the_step_formula() {
        let model = ReplicaModel::default();
        let reqs = [TraceRequest { arrival_secs: 1.0, input_tokens: 1000, output_tokens: 11 }];
        let ledger = run(&reqs, &model, 0.25);
        let prefill = model.step_ms(1000, 1) / 1000.0;
        assert!((ledger.first_token[0] - (1.0 + prefill)).abs() < 1e-9);
        let decode = model.step_ms(0, 1) / 1000.0;
        assert!((ledger.finished[0] - (1.0 + prefill + 10.0 * decode)).abs() < 1e-9);
        assert_eq!(ledger.admitted[0], 1.0);
    }

    /// A model whose decode steps grow with context (the shipped profiles' shape).
    fn context_model() -> ReplicaModel {
        ReplicaModel { attention_ms_per_context_token: 0.0005, ..ReplicaModel::default() }
    }

    #[test]
    fn decode_steps_grow_with_the_context_they_attend_to() {
        let model = context_model();
        let reqs = [TraceRequest { arrival_secs: 1.0, input_tokens: 1000, output_tokens: 11 }];
        let ledger = run(&reqs, &model, 0.25);
        let prefill = model.step_ms(1000, 1) / 1000.0;
        assert!((ledger.first_token[0] - (1.0 + prefill)).abs() < 1e-9);
        // Decode step i attends to the prompt, the first token and the i tokens since.
        let decode: f64 = (0..10).map(|i| model.step_ms_with_context(0, 1, 1001 + i) / 1000.0).sum();
        assert!((ledger.finished[0] - (1.0 + prefill + decode)).abs() < 1e-9, "{}", ledger.finished[0]);
        // Longer prompts, same output: every inter-token gap is longer.
        let mut previous = 0.0;
        for input in [10, 1000, 4000, 16000] {
            let reqs = [TraceRequest { arrival_secs: 0.0, input_tokens: input, output_tokens: 50 }];
            let ledger = run(&reqs, &model, 0.5);
            let tpot = (ledger.finished[0] - ledger.first_token[0]) / 49.0;
            assert!(tpot > previous, "input {input}: {tpot} <= {previous}");
            previous = tpot;
        }
    }

    #[test]
    fn stretch_step_counts_match_the_sums() {
        for stretch in [Stretch { first: 0.01, growth: 0.0 }, Stretch { first: 0.01, growth: 1e-5 }] {
            for span in [0.0, 0.005, 0.01, 0.0100001, 0.5, 3.7, 100.0] {
                let within = stretch.steps_within(span) as u64;
                assert!(stretch.elapsed(within) <= span + 1e-12);
                assert!(stretch.elapsed(within + 1) > span);
                if span > 0.0 {
                    let reach = stretch.steps_reaching(span) as u64;
                    assert!(reach >= 1 && stretch.elapsed(reach) >= span);
                    assert!(reach == 1 || stretch.elapsed(reach - 1) < span);
                }
            }
        }
    }

    #[test]
    fn advancing_in_small_or_large_strides_gives_the_same_timeline() {
        for model in [ReplicaModel::default(), context_model()] {
            same_timeline_for_any_stride(&model);
        }
    }

    fn same_timeline_for_any_stride(model: &ReplicaModel) {
        let model = *model;
        let reqs: Vec<TraceRequest> = (0..200)
            .map(|i| TraceRequest {
                arrival_secs: f64::from(i) * 0.05,
                input_tokens: 100 + (i * 37) % 3000,
                output_tokens: 1 + (i * 13) % 300,
            })
            .collect();
        let a = run(&reqs, &model, 0.001);
        let b = run(&reqs, &model, 7.0);
        for i in 0..reqs.len() {
            assert!(
                (a.finished[i] - b.finished[i]).abs() < 1e-6 * a.finished[i].max(1.0),
                "request {i}: {} vs {}",
                a.finished[i],
                b.finished[i]
            );
            assert!((a.first_token[i] - b.first_token[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn kv_budget_caps_concurrency() {
        let model = ReplicaModel { kv_cache_tokens: 2_500, ..ReplicaModel::default() };
        let reqs: Vec<TraceRequest> =
            (0..3).map(|_| TraceRequest { arrival_secs: 0.0, input_tokens: 1000, output_tokens: 100 }).collect();
        let ledger = run(&reqs, &model, 0.1);
        // Two fit (2 × 1100 ≤ 2500); the third waits until one finishes.
        assert_eq!(ledger.admitted[0], 0.0);
        assert_eq!(ledger.admitted[1], 0.0);
        assert!(ledger.admitted[2] >= ledger.finished[0].min(ledger.finished[1]) - 1e-9);
    }
}
