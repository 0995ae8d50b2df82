//! Fault injection for the metrics adapters, over real HTTP on 127.0.0.1 (issue 10): pods
//! that hang, serve garbage, a never-ending page, hostile pages (100,000 labels, 100,000
//! buckets, a 10 MB `# TYPE` word) or redirect the scrape elsewhere; a Prometheus that is
//! down, slow, streams a never-ending answer, answers garbage or a 5 MB error.
//!
//! For each: no panic, the rule missing with a bounded reason, never a scale-down, the
//! other pods and rules unaffected, and memory bounded (the bytes read are capped: the
//! process' resident set grows by far less than the faulty endpoint sent or would send).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vllm_scaling_core::{
    CurrentScale, Engine, GetScalingMetrics, MAX_REASON_BYTES, MetricsRequest, PodInfo, RuleStatus, TargetId,
};
use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions, Fault, Load};
use vllm_scaling_prom::{HttpOptions, PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions};

/// The process' resident set, bytes (Linux `/proc/self/statm`, 4 KiB pages).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm (the tests run on Linux)");
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("statm's resident field");
    pages * 4096
}

/// What a scripted endpoint answers.
#[derive(Clone)]
enum Answer {
    /// These bytes (a whole HTTP response), then close.
    Raw(Arc<Vec<u8>>),
    /// `200 OK` with `prefix`, then padding forever (chunked, no length).
    Endless { content_type: &'static str, prefix: &'static str },
    /// Read the request, never answer.
    Hang,
}

fn http(status: &str, content_type: &str, body: &[u8], extra_headers: &str) -> Answer {
    let mut out = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    Answer::Raw(Arc::new(out))
}

/// An endpoint on 127.0.0.1 answering each request by `script(request body)`; counts the
/// requests it got and the most it held at once.
struct Scripted {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    async fn start(delay: Duration, script: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let max_in_flight = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(script);
        let (h, m) = (Arc::clone(&hits), Arc::clone(&max_in_flight));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let (script, hits, max, in_flight) =
                    (Arc::clone(&script), Arc::clone(&h), Arc::clone(&m), Arc::clone(&in_flight));
                tokio::spawn(async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(now, Ordering::SeqCst);
                    serve_one(stream, delay, &*script).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Self { addr, hits, max_in_flight, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

async fn serve_one(mut stream: TcpStream, delay: Duration, script: &(dyn Fn(&str) -> Answer + Send + Sync)) {
    // The request: headers, then a body of `content-length` bytes.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    while buf.len() < header_end + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let body = String::from_utf8_lossy(&buf[header_end..]).into_owned();
    tokio::time::sleep(delay).await;
    match script(&body) {
        Answer::Raw(bytes) => {
            let _ = stream.write_all(&bytes).await;
        }
        Answer::Hang => std::future::pending::<()>().await,
        Answer::Endless { content_type, prefix } => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ntransfer-encoding: chunked\r\n\r\n");
            if stream.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let chunk_of = |data: &[u8]| {
                let mut c = format!("{:x}\r\n", data.len()).into_bytes();
                c.extend_from_slice(data);
                c.extend_from_slice(b"\r\n");
                c
            };
            if stream.write_all(&chunk_of(prefix.as_bytes())).await.is_err() {
                return;
            }
            let padding = chunk_of(&b" ".repeat(64 * 1024));
            // Until the client hangs up.
            while stream.write_all(&padding).await.is_ok() {}
        }
    }
}

fn pod(name: &str, url: &str) -> PodInfo {
    common::pod(name, url)
}

fn assert_bounded_reasons(decision: &vllm_scaling_core::Decision) {
    for r in &decision.rules {
        if let Some(why) = &r.reason {
            assert!(why.len() <= MAX_REASON_BYTES, "rule {}: a {}-byte reason", r.name, why.len());
        }
    }
    assert!(decision.explanation.len() <= 4 * MAX_REASON_BYTES * decision.rules.len().max(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_pods_fail_alone_within_bounds_and_never_scale_down() {
    let emulated = |fault: Fault| async move {
        let e = Emulator::start(
            "127.0.0.1:0".parse().unwrap(),
            EmulatorOptions { load: Load { queue_length: Some(3.0), ..Load::default() }, ..EmulatorOptions::default() },
        )
        .await
        .unwrap();
        e.control(ControlUpdate { fault: Some(fault), ..ControlUpdate::default() }).unwrap();
        e
    };
    let healthy = emulated(Fault::None).await;
    let hang = emulated(Fault::Hang).await;
    let garbage = emulated(Fault::Garbage).await;
    let endless = emulated(Fault::Huge { bytes: u64::MAX }).await;
    // The redirect points at a canary that records whether the scrape followed it.
    let canary =
        Scripted::start(Duration::ZERO, |_| http("200 OK", "text/plain", b"vllm:num_requests_waiting 0\n", "")).await;
    let redirect = emulated(Fault::Redirect { port: canary.addr.port() }).await;
    // A 1.2 MB series with 100,000 labels, a 100,000-bucket histogram, a 10 MB `# TYPE` word.
    let labels: String = {
        let mut p = "vllm:num_requests_waiting{".to_owned();
        for i in 0..100_000 {
            p.push_str(&format!("l{i}=\"v\","));
        }
        p + "} 1\n"
    };
    let buckets: String = (0..100_000)
        .map(|k| format!("vllm:time_to_first_token_seconds_bucket{{le=\"{k}.5\"}} {k}\n"))
        .chain(["vllm:num_requests_waiting 2\n".to_owned()])
        .collect();
    let type_word = format!("# TYPE vllm:num_requests_waiting {}\nvllm:num_requests_waiting 1\n", "g".repeat(10 << 20));
    let page = |body: String| {
        let answer = http("200 OK", "text/plain; version=0.0.4", body.as_bytes(), "");
        move |_: &str| answer.clone()
    };
    let labels_pod = Scripted::start(Duration::ZERO, page(labels)).await;
    let buckets_pod = Scripted::start(Duration::ZERO, page(buckets)).await;
    let type_pod = Scripted::start(Duration::ZERO, page(type_word)).await;
    let mut bad_url = pod("bad-url", "unused");
    bad_url.metrics_url = None;
    bad_url.metrics_url_error = Some("annotation prometheus.io/scheme is `gopher`: only http or https".into());
    let pods = vec![
        pod("healthy", &healthy.metrics_url()),
        pod("hang", &hang.metrics_url()),
        pod("garbage", &garbage.metrics_url()),
        pod("endless", &endless.metrics_url()),
        pod("redirect", &redirect.metrics_url()),
        pod("labels", &labels_pod.url("/metrics")),
        pod("buckets", &buckets_pod.url("/metrics")),
        pod("type-word", &type_pod.url("/metrics")),
        pod("ftp", &format!("ftp://{}/metrics", canary.addr)),
        pod("userinfo", &format!("http://user:pw@{}/metrics", canary.addr)),
        bad_url,
    ];
    let timeout = Duration::from_secs(2);
    let scraper = PodScraper::new(PodScrapeOptions {
        http: HttpOptions::with_timeout(timeout),
        max_page_bytes: 12 << 20,
        ..PodScrapeOptions::default()
    })
    .unwrap();
    let policy = common::policy("    - {metric: queue_length, threshold: 5}\n");
    let request = MetricsRequest {
        target: TargetId::new("", "test"),
        scale_target_ref: None,
        rules: policy.rules.clone(),
        pods: pods.clone(),
    };

    let rss_before = rss_bytes();
    let started = Instant::now();
    let readings = scraper.read(&policy.rules, &pods, common::now()).await;
    let took = started.elapsed();
    let grew = rss_bytes().saturating_sub(rss_before);
    let r = &readings[0];
    let why = |p: &str| r.pod_failures.get(p).cloned().unwrap_or_else(|| panic!("no failure for {p}: {r:?}"));

    assert_eq!(r.per_pod.get("healthy"), Some(&3.0), "{r:?}");
    assert_eq!(r.per_pod.get("buckets"), Some(&2.0), "a 100,000-bucket histogram is within the limits: {r:?}");
    assert_eq!(r.failure, None, "good pods keep the rule alive");
    assert!(why("hang").contains("timed out"), "{}", why("hang"));
    assert!(why("garbage").contains("invalid exposition page"), "{}", why("garbage"));
    assert!(why("endless").contains("larger than 12582912 bytes"), "{}", why("endless"));
    assert!(why("redirect").contains("redirects are not followed"), "{}", why("redirect"));
    assert!(why("labels").contains("line 1") && why("labels").contains("more than 128 labels"), "{}", why("labels"));
    assert!(why("type-word").contains("unknown metric type"), "{}", &why("type-word")[..200]);
    assert!(why("ftp").contains("scheme `ftp` is not http or https"), "{}", why("ftp"));
    assert!(why("userinfo").contains("credentials"), "{}", why("userinfo"));
    assert!(why("bad-url").contains("gopher"), "{}", why("bad-url"));
    assert_eq!(canary.hits.load(Ordering::SeqCst), 0, "the redirect, the ftp and the userinfo URL reached the canary");
    for (p, w) in &r.pod_failures {
        assert!(w.len() <= 2 * MAX_REASON_BYTES, "{p}: a {}-byte reason", w.len());
    }
    // The endless page stopped at the cap, not at the timeout; the 10 MB page is the
    // largest read. Without the cap, 3 s of an endless page is gigabytes.
    assert!(took < timeout + Duration::from_millis(500), "{took:?}");
    assert!(grew < 256 << 20, "resident set grew by {} MiB", grew >> 20);

    // Through the port and the engine: every bad pod counts as no value, the rule is fine,
    // and the fleet of 6 is never scaled down on these pods' account.
    let metrics = scraper.get_scaling_metrics(&request, common::now()).await.unwrap();
    let mut engine = Engine::new(policy.clone());
    let decision = engine.evaluate(common::now(), CurrentScale::new(6), &metrics);
    assert!(decision.desired_replicas >= 6, "{}", decision.explanation);
    assert_bounded_reasons(&decision);

    // Every pod bad: the rule is missing, replicas hold.
    let only_bad: Vec<PodInfo> =
        pods.iter().filter(|p| !["healthy", "buckets"].contains(&p.name.as_str())).cloned().collect();
    let metrics = scraper
        .get_scaling_metrics(&MetricsRequest { pods: only_bad, ..request.clone() }, common::now())
        .await
        .unwrap();
    let decision = Engine::new(policy).evaluate(common::now(), CurrentScale::new(6), &metrics);
    assert_eq!(decision.rules[0].status, RuleStatus::Missing, "{}", decision.explanation);
    assert_eq!(decision.desired_replicas, 6, "{}", decision.explanation);
    assert_bounded_reasons(&decision);
}

const VECTOR_ONE: &str =
    r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"1"]}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_prometheus_fails_rules_alone_within_bounds_and_never_scales_down() {
    let five_mb_error =
        Arc::new(format!(r#"{{"status":"error","errorType":"bad_data","error":"{}"}}"#, "e".repeat(5 << 20)));
    let canary =
        Scripted::start(Duration::ZERO, |_| http("200 OK", "application/json", VECTOR_ONE.as_bytes(), "")).await;
    let canary_location = format!("location: {}\r\n", canary.url("/api/v1/query"));
    let prometheus = Scripted::start(Duration::ZERO, move |body| {
        if body.contains("endless") {
            Answer::Endless {
                content_type: "application/json",
                prefix: r#"{"status":"success","data":{"resultType":"vector","result":["#,
            }
        } else if body.contains("garbage") {
            http("200 OK", "application/json", b"{\"status\":\"success\",\"data\":{\"resultT\x00\xff", "")
        } else if body.contains("proxy") {
            http("502 Bad Gateway", "text/html", "<html>bad gateway</html>".repeat(10_000).as_bytes(), "")
        } else if body.contains("error") {
            http("422 Unprocessable Entity", "application/json", five_mb_error.as_bytes(), "")
        } else if body.contains("slow") {
            Answer::Hang
        } else if body.contains("redirect") {
            http("302 Found", "text/plain", b"moved", &canary_location)
        } else if body.contains("many") {
            let series: Vec<String> =
                (0..200).map(|i| format!(r#"{{"metric":{{"x":"{i}"}},"value":[1,"1"]}}"#)).collect();
            let json =
                format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#, series.join(","));
            http("200 OK", "application/json", json.as_bytes(), "")
        } else {
            http("200 OK", "application/json", VECTOR_ONE.as_bytes(), "")
        }
    })
    .await;
    let rule = |name: &str| format!("    - {{metric: custom, name: {name}, threshold: 100, query: 'sum({name})'}}\n");
    let names = ["fine", "endless", "garbage", "proxy", "error", "slow", "redirect", "many"];
    let policy = common::policy(&names.iter().map(|n| rule(n)).collect::<String>());
    let timeout = Duration::from_secs(2);
    let mut options = PrometheusOptions::new(prometheus.url(""));
    options.http = HttpOptions::with_timeout(timeout);
    options.max_response_bytes = 8 << 20;
    options.max_series = 100;
    let metrics = PrometheusMetrics::new(options.clone()).unwrap();
    let target = TargetId::new("llm", "test");

    let rss_before = rss_bytes();
    let started = Instant::now();
    let readings = metrics.read(&policy.rules, &target, &[]).await;
    let took = started.elapsed();
    let grew = rss_bytes().saturating_sub(rss_before);
    let failure = |name: &str| {
        let r = readings.iter().find(|r| r.key == name).unwrap();
        r.failure.clone().unwrap_or_else(|| panic!("{name} did not fail: {r:?}"))
    };
    let fine = readings.iter().find(|r| r.key == "fine").unwrap();
    assert_eq!((fine.fleet, &fine.failure), (Some(1.0), &None), "the healthy rule is unaffected");
    assert!(failure("endless").contains("larger than 8388608 bytes"), "{}", failure("endless"));
    assert!(failure("garbage").contains("not Prometheus JSON"), "{}", failure("garbage"));
    assert!(failure("proxy").contains("HTTP 502") && failure("proxy").contains("text/html"), "{}", failure("proxy"));
    assert!(failure("error").contains("bad_data"), "{}", &failure("error")[..100]);
    assert!(failure("slow").contains("prometheus query failed"), "{}", failure("slow"));
    assert!(failure("redirect").contains("redirects are not followed"), "{}", failure("redirect"));
    assert!(failure("many").contains("more than 100 series"), "{}", failure("many"));
    assert_eq!(canary.hits.load(Ordering::SeqCst), 0, "the redirect was followed");
    for r in &readings {
        let len = r.failure.as_deref().map_or(0, str::len);
        assert!(len <= 2 * MAX_REASON_BYTES, "{}: a {len}-byte failure", r.key);
    }
    assert!(took < timeout + Duration::from_millis(1500), "{took:?}");
    assert!(grew < 128 << 20, "resident set grew by {} MiB", grew >> 20);

    // Through the engine: the healthy rule alone would scale 6 down to 1; the failed rules
    // hold the fleet.
    let fleet: Vec<PodInfo> = (0..6).map(|i| pod(&format!("vllm-{i}"), "http://127.0.0.1:9/metrics")).collect();
    let request =
        MetricsRequest { target: target.clone(), scale_target_ref: None, rules: policy.rules.clone(), pods: fleet };
    let observed = metrics.get_scaling_metrics(&request, common::now()).await.unwrap();
    let decision = Engine::new(policy.clone()).evaluate(common::now(), CurrentScale::new(6), &observed);
    assert_eq!(decision.desired_replicas, 6, "{}", decision.explanation);
    assert_eq!(
        decision.rules.iter().filter(|r| r.status == RuleStatus::Missing).count(),
        names.len() - 1,
        "{:?}",
        decision.rules
    );
    assert_bounded_reasons(&decision);

    // Prometheus down: every rule missing, replicas hold.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let down = PrometheusMetrics::new(PrometheusOptions { url: closed, ..options }).unwrap();
    let observed = down.get_scaling_metrics(&request, common::now()).await.unwrap();
    assert_eq!(observed.failures.len(), names.len(), "{observed:?}");
    assert!(observed.failures.values().all(|w| w.contains("prometheus query failed")), "{observed:?}");
    let decision = Engine::new(policy).evaluate(common::now(), CurrentScale::new(6), &observed);
    assert_eq!(decision.desired_replicas, 6, "{}", decision.explanation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_in_flight_are_bounded() {
    let prometheus =
        Scripted::start(Duration::from_millis(50), |_| http("200 OK", "application/json", VECTOR_ONE.as_bytes(), ""))
            .await;
    let rules: String = (0..40)
        .map(|i| format!("    - {{metric: custom, name: c{i}, threshold: 100, query: 'sum(c{i})'}}\n"))
        .collect();
    let policy = common::policy(&rules);
    let mut options = PrometheusOptions::new(prometheus.url(""));
    options.max_concurrent_queries = 4;
    let metrics = PrometheusMetrics::new(options).unwrap();
    let target = TargetId::new("llm", "test");
    // Two policies' reads at once share the adapter's bound.
    let (a, b) = tokio::join!(metrics.read(&policy.rules, &target, &[]), metrics.read(&policy.rules, &target, &[]));
    assert!(a.iter().chain(&b).all(|r| r.fleet == Some(1.0)), "{a:?}");
    assert_eq!(prometheus.hits.load(Ordering::SeqCst), 80);
    let max = prometheus.max_in_flight.load(Ordering::SeqCst);
    assert!((1..=4).contains(&max), "{max} queries were in flight at once");
}
