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
        let duration = model.step_ms(tokens, decoding + prefill_seqs) / 1000.0;
        if tokens > 0 {
            self.in_flight = Some(InFlight { end: self.clock + duration, duration, decoding });
            return true;
        }
        // A pure-decode stretch: identical steps until a request finishes, the head of the
        // queue arrives, or `t`.
        let Some(&Reverse((first_finish, _))) = self.decoding.peek() else { return false };
        let until_finish = first_finish.saturating_sub(self.steps).max(1);
        // A head of the queue that has already arrived is blocked by the KV cache or the
        // batch size, which only a finishing request frees.
        let until_arrival = match self.waiting.front() {
            Some(&id) if budget > 0 && reqs[id as usize].arrival_secs > self.clock => {
                ((reqs[id as usize].arrival_secs - self.clock) / duration).ceil().max(1.0)
            }
            _ => f64::INFINITY,
        };
        let until_t = ((t - self.clock) / duration).floor();
        let k = (until_finish as f64).min(until_arrival).min(until_t);
        if k < 1.0 {
            self.in_flight = Some(InFlight { end: self.clock + duration, duration, decoding });
            return true;
        }
        let k = k as u64;
        let start = self.clock;
        let start_steps = self.steps;
        self.steps += k;
        self.clock = start + k as f64 * duration;
        self.busy_secs += k as f64 * duration;
        self.generated_tokens += k * decoding as u64;
        while let Some(&Reverse((finish, id))) = self.decoding.peek() {
            if finish > self.steps {
                break;
            }
            self.decoding.pop();
            let at = start + (finish - start_steps) as f64 * duration;
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

    /// Whether it still holds requests.
    pub(crate) fn has_work(&self) -> bool {
        !self.is_idle() || !self.waiting.is_empty()
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

    #[test]
    fn advancing_in_small_or_large_strides_gives_the_same_timeline() {
        let model = ReplicaModel::default();
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
                (a.finished[i] - b.finished[i]).abs() < 1e-6,
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
