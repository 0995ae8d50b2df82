//! Exposition parsing throughput (MB/s): the real fixtures in ../shared/fixtures (when
//! present), an emulated vLLM V1 page, and a 10 MB synthetic page; and the hostile pages of
//! issue 10: one series with 100,000 labels and a histogram with 100,000 `le` values.
//!
//! `cargo bench -p vllm-scaling-benches --bench exposition`

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use vllm_scaling_core::Timestamp;
use vllm_scaling_prom::emulator::{EmulatorOptions, Load};
use vllm_scaling_prom::exposition::{ParseLimits, parse, parse_with_limits};
use vllm_scaling_prom::snapshot::{PodSnapshot, SeriesFilter};

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures");
    ["vllm/vllm-v0.5-datadog.prom", "vllm/vllm-v1-vllm-design-doc-abridged.prom", "dcgm/dcgm-exporter-datadog.prom"]
        .iter()
        .filter_map(|rel| match std::fs::read_to_string(dir.join(rel)) {
            Ok(text) => Some(((*rel).to_owned(), text)),
            Err(e) => {
                eprintln!("skipping fixture {rel}: {e}");
                None
            }
        })
        .collect()
}

/// A busy emulated replica's page (4 data-parallel engines, histograms filled).
fn emulated_page() -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let options = EmulatorOptions {
            engines: 4,
            load: Load { request_rate: 20.0, ..Load::default() },
            ..EmulatorOptions::default()
        };
        let e = vllm_scaling_prom::emulator::Emulator::start("127.0.0.1:0".parse().expect("addr"), options)
            .await
            .expect("emulator");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        e.render()
    })
}

/// About 10 MB of vLLM-like series: many pods' pages concatenated with distinct labels.
fn synthetic_page(target_bytes: usize) -> String {
    let one = emulated_page();
    let mut out = String::with_capacity(target_bytes + one.len());
    let mut i = 0;
    while out.len() < target_bytes {
        for line in one.lines() {
            if line.starts_with('#') {
                if i == 0 {
                    out.push_str(line);
                    out.push('\n');
                }
                continue;
            }
            // Give every copy its own pod label so series stay distinct.
            match line.find('{') {
                Some(b) => {
                    out.push_str(&line[..=b]);
                    out.push_str(&format!("pod=\"vllm-{i}\","));
                    out.push_str(&line[b + 1..]);
                }
                None => out.push_str(line),
            }
            out.push('\n');
        }
        i += 1;
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut pages = fixtures();
    pages.push(("emulated-v1-4-engines".to_owned(), emulated_page()));
    pages.push(("synthetic-10MB".to_owned(), synthetic_page(10 << 20)));
    let mut group = c.benchmark_group("exposition_parse");
    for (name, text) in &pages {
        assert!(parse(text).is_ok(), "{name} does not parse");
        group.throughput(Throughput::Bytes(text.len() as u64));
        if text.len() > 1 << 20 {
            group.sample_size(20);
        }
        group.bench_function(name.as_str(), |b| b.iter(|| black_box(parse(black_box(text)).map(|e| e.len()))));
    }
    group.finish();

    let page = &pages.iter().find(|(n, _)| n.starts_with("emulated")).expect("emulated page").1;
    let mut group = c.benchmark_group("pod_snapshot");
    group.throughput(Throughput::Bytes(page.len() as u64));
    group.bench_function("parse_and_extract_emulated_v1", |b| {
        b.iter(|| black_box(PodSnapshot::from_text(black_box(page), &SeriesFilter::default(), Timestamp::ZERO)))
    });
    group.finish();
}

/// One series with `n` distinct labels (about 1.2 MB for 100,000).
fn many_labels_page(n: usize) -> String {
    let mut page = String::with_capacity(n * 14);
    page.push_str("vllm:num_requests_waiting{");
    for i in 0..n {
        page.push_str(&format!("label_{i}=\"v\","));
    }
    page.push_str("} 1\n");
    page
}

/// A TTFT histogram with `n` distinct `le` values, written in a shuffled order.
fn many_buckets_page(n: usize) -> String {
    let mut page = String::with_capacity(n * 64);
    for i in 0..n {
        let k = (i * 7919) % n;
        page.push_str(&format!("vllm:time_to_first_token_seconds_bucket{{le=\"{k}.5\",model_name=\"m\"}} {k}\n"));
    }
    page.push_str("vllm:time_to_first_token_seconds_bucket{le=\"+Inf\",model_name=\"m\"} 100000\n");
    page
}

fn hostile(c: &mut Criterion) {
    let labels = many_labels_page(100_000);
    let buckets = many_buckets_page(100_000);
    let lifted = ParseLimits { max_labels_per_sample: usize::MAX, ..ParseLimits::default() };
    assert!(parse(&labels).is_err(), "the default limit rejects 100,000 labels");
    assert_eq!(parse_with_limits(&labels, lifted).map(|e| e.len()), Ok(1));
    let mut group = c.benchmark_group("hostile_pages");
    group.sample_size(20);
    group.throughput(Throughput::Bytes(labels.len() as u64));
    // Rejected at label 129 by the default limit.
    group.bench_function("100k_labels_default_limits", |b| b.iter(|| black_box(parse(black_box(&labels)).is_err())));
    // The duplicate check itself, with the label limit lifted: every label is checked.
    group.bench_function("100k_labels_no_label_limit", |b| {
        b.iter(|| black_box(parse_with_limits(black_box(&labels), lifted).map(|e| e.len())))
    });
    group.throughput(Throughput::Bytes(buckets.len() as u64));
    group.bench_function("100k_buckets_pod_snapshot", |b| {
        b.iter(|| {
            black_box(
                PodSnapshot::from_text(black_box(&buckets), &SeriesFilter::default(), Timestamp::ZERO)
                    .map(|s| s.histogram(vllm_scaling_core::Metric::Ttft).map(|h| h.buckets.len())),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench, hostile);
criterion_main!(benches);
