//! The Prometheus adapter's HTTP options against a recording stand-in for the query API
//! on 127.0.0.1 (plain and TLS): credentials are sent, a custom CA is trusted, and HTTP
//! errors, hangs and untrusted certificates become rule failures with reasons.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use vllm_scaling_core::TargetId;
use vllm_scaling_prom::{PrometheusMetrics, PrometheusOptions, RuleReading};

#[derive(Clone, Copy)]
enum Behaviour {
    Answer,
    Unavailable,
    Hang,
}

#[derive(Default)]
struct Seen {
    authorization: Vec<String>,
    queries: Vec<String>,
}

const VECTOR: &str = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"pod":"vllm-0"},"value":[1700000000,"7"]}]}}"#;

async fn handle(
    req: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Seen>>,
    behaviour: Behaviour,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let auth = req.headers().get("authorization").map(|v| v.to_str().unwrap_or("?").to_owned());
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    {
        let mut s = seen.lock().unwrap();
        s.authorization.extend(auth);
        s.queries.push(String::from_utf8_lossy(&body).into_owned());
    }
    let (status, body) = match behaviour {
        Behaviour::Answer => (StatusCode::OK, VECTOR),
        Behaviour::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "upstream connect error"),
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    let ct = if status == StatusCode::OK { "application/json" } else { "text/plain" };
    r.headers_mut().insert("content-type", ct.parse().unwrap());
    Ok(r)
}

/// Serves the stand-in; with `tls`, behind the test certificate.
async fn serve(behaviour: Behaviour, tls: bool) -> (String, Arc<Mutex<Seen>>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let acceptor = tls.then(|| {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = CertificateDer::pem_slice_iter(common::data("tls/server.pem").as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(common::data("tls/server.key").as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tokio_rustls::TlsAcceptor::from(Arc::new(config))
    });
    let seen2 = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let seen = Arc::clone(&seen2);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| handle(req, Arc::clone(&seen), behaviour));
                let http = hyper::server::conn::http1::Builder::new();
                match acceptor {
                    Some(a) => {
                        if let Ok(tls) = a.accept(stream).await {
                            let _ = http.serve_connection(hyper_util::rt::TokioIo::new(tls), service).await;
                        }
                    }
                    None => {
                        let _ = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
                    }
                }
            });
        }
    });
    let scheme = if tls { "https" } else { "http" };
    (format!("{scheme}://127.0.0.1:{}", addr.port()), seen, task)
}

async fn read(options: PrometheusOptions) -> RuleReading {
    let prom = PrometheusMetrics::new(options).unwrap();
    let rules = common::rules("    - {metric: queue_length, threshold: 5}\n");
    prom.read(&rules, &TargetId::new("llm", "t"), &[]).await.remove(0)
}

#[tokio::test]
async fn bearer_token_and_basic_auth_are_sent() {
    let (url, seen, _task) = serve(Behaviour::Answer, false).await;
    let mut o = PrometheusOptions::new(&url);
    o.http.bearer_token = Some("s3cret\n".into());
    o.model_name = Some("m".into());
    let r = read(o).await;
    assert_eq!(r.per_pod["vllm-0"], 7.0, "{r:?}");
    {
        let s = seen.lock().unwrap();
        assert!(s.authorization.iter().all(|a| a == "Bearer s3cret"), "{:?}", s.authorization);
        assert_eq!(s.authorization.len(), 2, "value and age queries");
        let q = s.queries.iter().find(|q| q.contains("sum+by")).expect("the value query");
        assert!(q.contains("model_name%3D%22m%22"), "{q}");
        assert!(q.contains("namespace%3D%22llm%22"), "the target namespace is the default: {q}");
    }
    let mut o = PrometheusOptions::new(&url);
    o.http.basic_auth = Some(("me".into(), "pa:ss".into()));
    let _ = read(o).await;
    // base64("me:pa:ss")
    assert!(seen.lock().unwrap().authorization.iter().any(|a| a == "Basic bWU6cGE6c3M="));
}

#[tokio::test]
async fn http_errors_and_hangs_are_rule_failures() {
    let (url, _seen, _task) = serve(Behaviour::Unavailable, false).await;
    let r = read(PrometheusOptions::new(&url)).await;
    let why = r.failure.unwrap();
    assert!(why.starts_with("prometheus query failed"), "{why}");
    assert!(why.contains("503") || why.contains("upstream connect error"), "{why}");

    let (url, _seen, _task) = serve(Behaviour::Hang, false).await;
    let mut o = PrometheusOptions::new(&url);
    o.http.timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let r = read(o).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(r.failure.as_deref().unwrap().contains("prometheus query failed"), "{r:?}");
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    let (url, seen, _task) = serve(Behaviour::Answer, true).await;
    let mut o = PrometheusOptions::new(&url);
    o.http.ca_pem = Some(common::data("tls/ca.pem").into_bytes());
    o.http.bearer_token = Some("t".into());
    let r = read(o).await;
    assert_eq!(r.per_pod.get("vllm-0"), Some(&7.0), "{r:?}");
    assert!(seen.lock().unwrap().authorization.iter().all(|a| a == "Bearer t"));

    // Without the CA the certificate is not trusted: a failure that says so.
    let r = read(PrometheusOptions::new(&url)).await;
    let why = r.failure.unwrap();
    assert!(why.contains("certificate") || why.contains("UnknownIssuer"), "{why}");
}

#[tokio::test]
async fn a_token_file_is_re_read_when_it_changes() {
    let (url, seen, _task) = serve(Behaviour::Answer, false).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "first-token\n").unwrap();
    let mut o = PrometheusOptions::new(&url);
    o.http.credential_file = Some(vllm_scaling_prom::CredentialFile::BearerToken(token.clone()));
    let prom = PrometheusMetrics::new(o).unwrap();
    let rules = common::rules("    - {metric: queue_length, threshold: 5}\n");
    let target = TargetId::new("llm", "t");
    assert_eq!(prom.read(&rules, &target, &[]).await[0].per_pod["vllm-0"], 7.0);
    // Rotated as kubelet rotates a projected token: a new file renamed over the old one.
    let next = dir.path().join("token.new");
    std::fs::write(&next, "second-token-rotated\n").unwrap();
    std::fs::rename(&next, &token).unwrap();
    assert_eq!(prom.read(&rules, &target, &[]).await[0].per_pod["vllm-0"], 7.0);
    let auth = seen.lock().unwrap().authorization.clone();
    assert_eq!(auth.len(), 4, "value and age queries, twice: {auth:?}");
    assert!(auth[..2].iter().all(|a| a == "Bearer first-token"), "{auth:?}");
    assert!(auth[2..].iter().all(|a| a == "Bearer second-token-rotated"), "{auth:?}");

    // Basic auth from a file, the two-line form.
    let basic = dir.path().join("basic");
    std::fs::write(&basic, "me\npa:ss\n").unwrap();
    let mut o = PrometheusOptions::new(&url);
    o.http.credential_file = Some(vllm_scaling_prom::CredentialFile::BasicAuth(basic));
    let _ = read(o).await;
    assert!(seen.lock().unwrap().authorization.iter().any(|a| a == "Basic bWU6cGE6c3M="));

    // A file and a token at once is ambiguous.
    let mut o = PrometheusOptions::new(&url);
    o.http.credential_file = Some(vllm_scaling_prom::CredentialFile::BearerToken(token));
    o.http.bearer_token = Some("x".into());
    assert!(PrometheusMetrics::new(o).unwrap_err().to_string().contains("not several"));
}

#[tokio::test]
async fn credentials_in_the_url_never_reach_a_failure_or_debug_output() {
    // Nothing listens on this port: the client's error quotes the URL.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let o = PrometheusOptions::new(format!("http://admin:hunter2@127.0.0.1:{}/prom", closed.port()));
    let shown = format!("{o:?}");
    assert!(!shown.contains("hunter2") && shown.contains("<redacted>@127.0.0.1"), "{shown}");
    let r = read(o).await;
    let why = r.failure.unwrap();
    assert!(why.starts_with("prometheus query failed"), "{why}");
    assert!(!why.contains("hunter2"), "{why}");
}
