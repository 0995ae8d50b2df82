//! One engine evaluation with 1, 3 and 10 rules over 10, 100 and 1,000 pods, each with a
//! full 300 s recommendation history (an evaluation every 15 s) and recent scale events.
//!
//! Run: `cargo bench -p vllm-scaling-benches --bench engine`

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use vllm_scaling_benches::engine_fixture;

fn evaluate(c: &mut Criterion) {
    let mut group = c.benchmark_group("evaluate");
    for rules in [1usize, 3, 10] {
        for pods in [10usize, 100, 1000] {
            let (mut engine, scale, metrics, mut now) = engine_fixture(rules, pods);
            group.bench_function(BenchmarkId::new(format!("{rules}-rules"), pods), |b| {
                b.iter(|| {
                    // Every evaluation is 15 s after the last, as in a controller: the
                    // history stays at its steady-state size (old slots are reused).
                    now = now.saturating_add(Duration::from_secs(15));
                    black_box(engine.evaluate(now, scale, black_box(&metrics)))
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, evaluate);
criterion_main!(benches);
