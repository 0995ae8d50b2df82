//! The fleet simulator: simulated requests per second for a fixed fleet (the replica
//! model and router alone), for the recommended policy (plus the engine, scrapes and
//! metric building), and for the whole `vllm-autoscaler simulate` comparison.
//!
//! Run: `cargo bench -p vllm-scaling-benches --bench sim`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vllm_scaling_core::sim::{
    ExperimentConfig, FixedAutoscaler, FleetConfig, GeneratorConfig, Learning, Plan, PolicyKind, Start, Trace, compare,
    simulate,
};

/// Ten minutes of the built-in generator at its default rate (about 50,000 requests).
fn load() -> Trace {
    GeneratorConfig { duration_secs: 600.0, daily_period_secs: 600.0, ..GeneratorConfig::default() }
        .generate(1)
        .expect("valid generator settings")
}

fn fleet(c: &mut Criterion) {
    let trace = load();
    let requests = trace.requests();
    let mut group = c.benchmark_group("simulate");
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.sample_size(10);
    group.bench_function("fixed-fleet", |b| {
        let config = FleetConfig { initial_replicas: 12, ..FleetConfig::default() };
        b.iter(|| {
            let mut fixed = FixedAutoscaler::new("fixed", 12);
            black_box(simulate(black_box(requests), &config, &mut fixed, &mut |_| {}).expect("runs"))
        });
    });
    // In sample and cold: the recommended policy replays exactly these requests once.
    let config = ExperimentConfig { learning: Learning::InSample, start: Start::Cold, ..ExperimentConfig::default() };
    let plan = Plan::prepare(requests, &config, &mut |_, _| {}).expect("plan");
    group.bench_function("vllm-scaling", |b| {
        b.iter(|| black_box(plan.run(black_box(PolicyKind::VllmScaling), &mut |_| {}).expect("runs")));
    });
    group.finish();

    let mut group = c.benchmark_group("compare");
    group.sample_size(10);
    group.throughput(Throughput::Elements(requests.len() as u64));
    group.bench_function("all-policies", |b| {
        b.iter(|| {
            black_box(
                compare(black_box(requests), &ExperimentConfig::default(), &PolicyKind::ALL, &mut |_, _| {})
                    .expect("runs"),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, fleet);
criterion_main!(benches);
