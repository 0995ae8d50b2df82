//! `Engine::evaluate` timed by the CPU time of the measuring thread, not wall time.
//!
//! On a shared machine a wall-clock benchmark also counts the time the thread waited for
//! a core; the kernel's per-thread run time (`/proc/thread-self/schedstat`, Linux) does
//! not. Prints, per configuration, the best of 7 rounds of the mean CPU time per
//! evaluation (each round long enough that the scheduler's accounting granularity does
//! not matter).
//!
//! ```sh
//! cargo bench -p vllm-scaling-benches --bench engine_cpu
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use vllm_scaling_benches::engine_fixture;

/// Nanoseconds this thread has run on a CPU.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

fn main() {
    if thread_cpu_ns().is_none() {
        eprintln!("engine_cpu: /proc/thread-self/schedstat is not readable (Linux only); use `--bench engine`");
        std::process::exit(2);
    }
    // `cargo bench` passes `--bench`; a filter like `3x100` picks configurations.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!("| rules | pods | CPU time per evaluation (best of 7 rounds) |");
    println!("|---:|---:|---:|");
    for rules in [1usize, 3, 10] {
        for pods in [10usize, 100, 1000] {
            if filter.as_ref().is_some_and(|f| *f != format!("{rules}x{pods}")) {
                continue;
            }
            let (mut engine, scale, metrics, mut now) = engine_fixture(rules, pods);
            let mut evaluate = |n: u64| {
                for _ in 0..n {
                    // Every evaluation 15 s after the last, as in `--bench engine`.
                    now = now.saturating_add(Duration::from_secs(15));
                    black_box(engine.evaluate(now, scale, black_box(&metrics)));
                }
            };
            // Calibrate a round to about 0.2 s of wall time.
            let mut n: u64 = 1;
            loop {
                let t = Instant::now();
                evaluate(n);
                if t.elapsed() > Duration::from_millis(200) {
                    break;
                }
                n *= 2;
            }
            let mut best = f64::INFINITY;
            for _ in 0..7 {
                let start = thread_cpu_ns().unwrap_or(0);
                evaluate(n);
                let spent = thread_cpu_ns().unwrap_or(0).saturating_sub(start);
                best = best.min(spent as f64 / n as f64);
            }
            let shown = if best >= 1000.0 { format!("{:.2} µs", best / 1000.0) } else { format!("{best:.0} ns") };
            println!("| {rules} | {pods} | {shown} |");
        }
    }
}
