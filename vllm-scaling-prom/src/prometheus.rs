//! The Prometheus-backed adapter (feature `prometheus`): runs each rule's PromQL
//! ([`crate::promql`]) through prometheus-http-query and turns the results into readings.
//!
//! Answers are bounded: the body is streamed and reading stops at
//! [`PrometheusOptions::max_response_bytes`], an answer with more than
//! [`PrometheusOptions::max_series`] series is refused (Prometheus 3 is also asked for at
//! most one more with `limit`), at most [`PrometheusOptions::max_concurrent_queries`]
//! queries are in flight per adapter, and a redirect is reported, not followed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use prometheus_http_query::Client;
use prometheus_http_query::response::Data;
use tokio::sync::Semaphore;
use vllm_scaling_core::{
    GetScalingMetrics, MetricSource, MetricsRequest, PodInfo, ResolvedRule, ScalingMetrics, TargetId, Timestamp,
    error_chain, excerpt, redact_credentials,
};

use crate::Error;
use crate::http::{FileCredential, HttpOptions, build_client};
use crate::promql::{QueryScope, RuleQueries, in_flight_query, rule_queries};
use crate::reading::{RuleReading, to_scaling_metrics};

/// Settings of the Prometheus adapter.
#[derive(Clone)]
pub struct PrometheusOptions {
    /// The base URL (`http://prometheus.monitoring:9090`, or a proxy path).
    pub url: String,
    /// HTTP settings: timeout (default 5 s), bearer token or basic auth, custom CA.
    pub http: HttpOptions,
    /// The pods' namespace; default: the request's target namespace, when it has one.
    pub namespace: Option<String>,
    /// Only series of this served model (`model_name` label).
    pub model_name: Option<String>,
    /// Extra `label="value"` matchers for vLLM series (`job`, `service`...).
    pub extra_matchers: Vec<(String, String)>,
    /// Values whose newest sample is older than this are stale and treated as missing
    /// (default 2 min).
    pub max_age: Duration,
    /// Restrict queries to the request's pods (`pod=~"..."`) when it lists any (default true).
    pub filter_by_pods: bool,
    /// The largest answer read, bytes (default 8 MiB): reading stops at the first byte past
    /// it and the query fails.
    pub max_response_bytes: usize,
    /// The most series an answer may hold (default 10,000; a per-pod query has one per pod).
    pub max_series: usize,
    /// The most queries in flight at once through this adapter, over all rules and policies
    /// (default 16).
    pub max_concurrent_queries: usize,
}

impl std::fmt::Debug for PrometheusOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry `user:password@`.
        f.debug_struct("PrometheusOptions")
            .field("url", &redact_credentials(&self.url))
            .field("http", &self.http)
            .field("namespace", &self.namespace)
            .field("model_name", &self.model_name)
            .field("extra_matchers", &self.extra_matchers)
            .field("max_age", &self.max_age)
            .field("filter_by_pods", &self.filter_by_pods)
            .finish()
    }
}

impl PrometheusOptions {
    /// Options for a base URL, with the defaults.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            http: HttpOptions::with_timeout(Duration::from_secs(5)),
            namespace: None,
            model_name: None,
            extra_matchers: Vec::new(),
            max_age: Duration::from_secs(120),
            filter_by_pods: true,
            max_response_bytes: 8 << 20,
            max_series: 10_000,
            max_concurrent_queries: 16,
        }
    }
}

/// The Prometheus [`GetScalingMetrics`].
///
/// Never fails as a whole: an unreachable server, HTTP errors, timeouts, empty results and
/// stale data become per-rule failures with the reason, which the engine reports as
/// `missing` and which never scale the target down.
#[derive(Clone)]
pub struct PrometheusMetrics {
    client: Client,
    options: PrometheusOptions,
    /// One permit per query in flight.
    in_flight: Arc<Semaphore>,
    /// The credential from `options.http.credential_file`, re-read when it changes.
    credential: Option<Arc<FileCredential>>,
}

impl std::fmt::Debug for PrometheusMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusMetrics").field("options", &self.options).finish_non_exhaustive()
    }
}

impl PrometheusMetrics {
    /// An adapter for `options.url`.
    ///
    /// # Errors
    /// A bad URL, CA bundle, credential or matcher label name.
    pub fn new(options: PrometheusOptions) -> Result<Self, Error> {
        if options.http.credential_file.is_some()
            && (options.http.bearer_token.is_some() || options.http.basic_auth.is_some())
        {
            return Err(Error::InvalidOption {
                option: "credential_file",
                reason: "give a credential file, a bearer token or basic auth, not several".into(),
            });
        }
        let http = build_client(&options.http, 16)?;
        let client = Client::from(http, &options.url).map_err(|source| Error::PrometheusUrl {
            url: vllm_scaling_core::redact_credentials(&options.url),
            source,
        })?;
        let credential = options.http.credential_file.clone().map(FileCredential::load).transpose()?.map(Arc::new);
        let scope = QueryScope { vllm_matchers: options.extra_matchers.clone(), ..QueryScope::default() };
        scope.validate().map_err(|reason| Error::InvalidOption { option: "extra_matchers", reason })?;
        if options.max_age.is_zero() {
            return Err(Error::InvalidOption { option: "max_age", reason: "must be positive".into() });
        }
        for (option, value) in [
            ("max_response_bytes", options.max_response_bytes),
            ("max_series", options.max_series),
            ("max_concurrent_queries", options.max_concurrent_queries),
        ] {
            if value == 0 {
                return Err(Error::InvalidOption { option, reason: "must be at least 1".into() });
            }
        }
        let in_flight = Arc::new(Semaphore::new(options.max_concurrent_queries.min(Semaphore::MAX_PERMITS)));
        Ok(Self { client, options, in_flight, credential })
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &PrometheusOptions {
        &self.options
    }

    /// The query scope for a request.
    #[must_use]
    pub fn scope(&self, target: &TargetId, pods: &[PodInfo]) -> QueryScope {
        let namespace =
            self.options.namespace.clone().or_else(|| (!target.namespace.is_empty()).then(|| target.namespace.clone()));
        let mut vllm_matchers = Vec::new();
        if let Some(m) = &self.options.model_name {
            vllm_matchers.push(("model_name".to_owned(), m.clone()));
        }
        vllm_matchers.extend(self.options.extra_matchers.iter().cloned());
        let pods = if self.options.filter_by_pods { pods.iter().map(|p| p.name.clone()).collect() } else { Vec::new() };
        QueryScope { namespace, pods, vllm_matchers }
    }

    /// Reads every rule (concurrently, at most `max_concurrent_queries` queries at once).
    pub async fn read(&self, rules: &[ResolvedRule], target: &TargetId, pods: &[PodInfo]) -> Vec<RuleReading> {
        let scope = self.scope(target, pods);
        futures::future::join_all(rules.iter().map(|rule| self.read_rule(rule, &scope))).await
    }

    async fn read_rule(&self, rule: &ResolvedRule, scope: &QueryScope) -> RuleReading {
        let mut r = RuleReading::new(rule.key.clone(), rule.metric, MetricSource::Prometheus);
        let queries = match rule_queries(rule, scope) {
            Ok(q) => q,
            Err(why) => {
                r.failure = Some(why);
                return r;
            }
        };
        r.detail = Some(queries.value.clone());
        let (value, age) = futures::join!(self.query(&queries.value), async {
            match &queries.age {
                Some(q) => Some(self.query(q).await),
                None => None,
            }
        });
        let value = match value {
            Ok(v) => v,
            Err(why) => {
                r.failure = Some(why);
                return r;
            }
        };
        // An age query that fails leaves the age unknown; the value still counts.
        let ages = match age {
            Some(Ok(a)) => Some(a),
            Some(Err(why)) => {
                tracing::debug!(rule = %rule.key, %why, "age query failed");
                None
            }
            None => None,
        };
        let undefined_quantile = fill(&mut r, &queries, value, ages.as_ref(), self.options.max_age);
        if undefined_quantile {
            // Idle only if nothing is waiting or running either: a stalled fleet with a
            // queue stays missing (and holds).
            match self.query(&in_flight_query(scope)).await.map(|d| series(&d)) {
                Ok(v) if v.len() == 1 && v[0].1 == 0.0 => {
                    r.failure = None;
                    r.idle = true;
                }
                Ok(v) => tracing::debug!(rule = %rule.key, in_flight = ?v, "quantile undefined, fleet not idle"),
                Err(why) => tracing::debug!(rule = %rule.key, %why, "in-flight query failed"),
            }
        }
        r
    }

    async fn query(&self, promql: &str) -> Result<Data, String> {
        // A closed semaphore never happens (it is never closed); treat it as a failure anyway.
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "prometheus query failed: the adapter is shut down".to_owned())?;
        let timeout_ms = i64::try_from(self.options.http.timeout.as_millis()).unwrap_or(i64::MAX);
        let limit = self.options.max_series.saturating_add(1);
        let mut query = self.client.query(promql).timeout(timeout_ms).query("limit", limit);
        if let Some(credential) = &self.credential {
            query = query.header(reqwest::header::AUTHORIZATION, credential.header());
        }
        // The error may quote the URL, credentials included.
        let resp = query
            .post_raw()
            .await
            .map_err(|e| format!("prometheus query failed: {}", bounded(&redact_credentials(&error_chain(&e)))))?;
        let status = resp.status();
        let content_type =
            resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        if status.is_redirection() {
            let to = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
            return Err(format!(
                "prometheus query failed: HTTP {status}: redirects are not followed (to `{}`): set the Prometheus URL to where it points",
                excerpt(&redact_credentials(to), 200, 1)
            ));
        }
        let body = read_capped(resp, self.options.max_response_bytes).await?;
        parse_answer(status, &content_type, &body, self.options.max_series)
    }
}

/// External text quoted in a failure: one bounded place.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    excerpt(text, vllm_scaling_core::MAX_REASON_BYTES, vllm_scaling_core::MAX_REASON_LINES)
}

/// The body, streamed, stopping at the first chunk past `cap` bytes.
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let too_big = || format!("prometheus query failed: the answer is larger than {cap} bytes (max_response_bytes)");
    if resp.content_length().is_some_and(|n| n > cap as u64) {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| {
        format!("prometheus query failed: reading the answer: {}", bounded(&redact_credentials(&error_chain(&e))))
    })? {
        if body.len() + chunk.len() > cap {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Prometheus' JSON envelope (`/api/v1/query`).
#[derive(serde::Deserialize)]
struct Envelope {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

/// An answer's body as data, or why it is not usable (pure, so tested without a server).
fn parse_answer(
    status: reqwest::StatusCode,
    content_type: &str,
    body: &[u8],
    max_series: usize,
) -> Result<Data, String> {
    let text = || String::from_utf8_lossy(body);
    if !content_type.contains("json") {
        // A proxy's error page, most likely.
        return Err(format!(
            "prometheus query failed: HTTP {status} with {} content: {}",
            if content_type.is_empty() { "no" } else { content_type },
            bounded(text().trim())
        ));
    }
    let envelope: Envelope = serde_json::from_slice(body).map_err(|e| {
        format!(
            "prometheus query failed: HTTP {status}, the answer is not Prometheus JSON ({e}): {}",
            bounded(text().trim())
        )
    })?;
    match (envelope.status.as_str(), envelope.data) {
        ("success", Some(data)) => {
            let count = match &data {
                Data::Vector(v) => v.len(),
                Data::Matrix(m) => m.len(),
                Data::Scalar(_) => 1,
            };
            if count > max_series {
                return Err(format!(
                    "prometheus query failed: the answer has more than {max_series} series (max_series): aggregate the query"
                ));
            }
            Ok(data)
        }
        ("success", None) => Err(format!("prometheus query failed: HTTP {status}, a success without data")),
        _ => Err(format!(
            "prometheus query failed: {}: {}",
            bounded(envelope.error_type.as_deref().unwrap_or("error")),
            bounded(envelope.error.as_deref().unwrap_or("no error message"))
        )),
    }
}

/// Why a latency quantile has no value when its histogram did not grow.
const NO_REQUESTS_FINISHED: &str = "no requests finished in the window (histogram_quantile is NaN)";

/// Per-series values of a result: `(pod label, value)`; a scalar is one series without a pod.
fn series(data: &Data) -> Vec<(Option<String>, f64)> {
    match data {
        Data::Vector(v) => v.iter().map(|s| (s.metric().get("pod").cloned(), s.sample().value())).collect(),
        Data::Scalar(s) => vec![(None, s.value())],
        Data::Matrix(m) => {
            m.iter().filter_map(|s| Some((s.metric().get("pod").cloned(), s.samples().last()?.value()))).collect()
        }
    }
}

/// Files a query result into a reading (pure, so the rules are tested without a server).
/// Returns whether the value is a latency quantile that is undefined because no request
/// finished in the window (the reading then fails, unless the fleet turns out idle).
fn fill(r: &mut RuleReading, q: &RuleQueries, value: Data, ages: Option<&Data>, max_age: Duration) -> bool {
    let values = series(&value);
    let ages: Vec<(Option<String>, f64)> = ages.map(series).unwrap_or_default();
    let max_age_secs = max_age.as_secs_f64();
    if values.is_empty() {
        r.failure = Some(format!(
            "the query returned no series (is Prometheus scraping vLLM, and do the label matchers fit?): {}",
            q.value
        ));
        return false;
    }
    let custom = !q.per_pod && q.age.is_none();
    // A custom query is per pod when it keeps a `pod` label on every series.
    let per_pod = q.per_pod || (custom && values.iter().all(|(pod, _)| pod.is_some()));
    if per_pod {
        let age_of: BTreeMap<&str, f64> = ages.iter().filter_map(|(p, a)| Some((p.as_deref()?, *a))).collect();
        let mut no_pod = 0usize;
        let mut oldest: f64 = 0.0;
        for (pod, v) in &values {
            let Some(pod) = pod else {
                no_pod += 1;
                continue;
            };
            if let Some(&age) = age_of.get(pod.as_str()) {
                if age > max_age_secs {
                    r.pod_failures
                        .insert(pod.clone(), format!("stale: newest sample {age:.0}s old (max {max_age_secs:.0}s)"));
                    continue;
                }
                oldest = oldest.max(age);
            }
            // NaN, infinite or negative values go through: the engine marks the rule invalid
            // and says which pod's value was unusable.
            r.per_pod.insert(pod.clone(), *v);
        }
        if no_pod > 0 && r.per_pod.is_empty() && r.pod_failures.is_empty() {
            r.failure = Some(
                "the series have no `pod` label: relabel the scrape so vLLM's series carry the pod name \
                 (a PodMonitor or kubernetes_sd with `pod` relabelling)"
                    .to_owned(),
            );
            return false;
        }
        if r.per_pod.is_empty() {
            r.failure = Some(crate::reading::summarize_pod_failures("every value is stale", &r.pod_failures));
            return false;
        }
        r.age_secs = (!ages.is_empty()).then_some(oldest);
        return false;
    }
    if values.len() > 1 {
        r.failure = Some(format!(
            "the query returned {} series where one value was expected: aggregate it (sum(...), max(...)) or keep a `pod` label on every series",
            values.len()
        ));
        return false;
    }
    let v = values[0].1;
    let age = ages.iter().map(|(_, a)| *a).reduce(f64::min);
    if let Some(age) = age {
        if age > max_age_secs {
            r.failure = Some(format!("stale: newest sample {age:.0}s old (max {max_age_secs:.0}s)"));
            return false;
        }
        r.age_secs = Some(age);
    }
    if v.is_nan() && !custom {
        // histogram_quantile over buckets that did not grow: no request finished in the window.
        r.failure = Some(NO_REQUESTS_FINISHED.to_owned());
        return true;
    }
    r.fleet = Some(v);
    false
}

#[async_trait]
impl GetScalingMetrics for PrometheusMetrics {
    type Error = Error;

    async fn get_scaling_metrics(&self, request: &MetricsRequest, _now: Timestamp) -> Result<ScalingMetrics, Error> {
        let readings = self.read(&request.rules, &request.target, &request.pods).await;
        for r in &readings {
            if let Some(why) = &r.failure {
                tracing::debug!(rule = %r.key, reason = %why, "prometheus source: rule missing");
            }
        }
        Ok(to_scaling_metrics(&readings, &request.pods))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vllm_scaling_core::Metric;

    fn vector(json: &str) -> Data {
        serde_json::from_str(&format!(r#"{{"resultType":"vector","result":{json}}}"#)).unwrap()
    }

    fn per_pod_q() -> RuleQueries {
        RuleQueries { value: "sum by (pod) (x)".into(), age: Some("time() - ...".into()), per_pod: true }
    }

    fn reading(metric: Metric) -> RuleReading {
        RuleReading::new(metric.name(), metric, MetricSource::Prometheus)
    }

    #[test]
    fn per_pod_values_with_ages_and_staleness() {
        let mut r = reading(Metric::QueueLength);
        let values = vector(
            r#"[{"metric":{"pod":"a"},"value":[1,"3"]},{"metric":{"pod":"b"},"value":[1,"5"]},{"metric":{"pod":"c"},"value":[1,"NaN"]}]"#,
        );
        let ages = vector(r#"[{"metric":{"pod":"a"},"value":[1,"2.5"]},{"metric":{"pod":"b"},"value":[1,"300"]}]"#);
        fill(&mut r, &per_pod_q(), values, Some(&ages), Duration::from_secs(60));
        assert_eq!(r.per_pod.get("a"), Some(&3.0));
        assert!(r.per_pod.get("c").unwrap().is_nan(), "NaN reaches the engine, which marks the rule invalid");
        assert!(r.pod_failures["b"].starts_with("stale: newest sample 300s old"), "{:?}", r.pod_failures);
        assert_eq!(r.age_secs, Some(2.5));
        assert_eq!(r.failure, None);
    }

    #[test]
    fn all_stale_empty_or_unlabelled_results_are_failures() {
        let mut r = reading(Metric::QueueLength);
        let values = vector(r#"[{"metric":{"pod":"a"},"value":[1,"3"]}]"#);
        let ages = vector(r#"[{"metric":{"pod":"a"},"value":[1,"999"]}]"#);
        fill(&mut r, &per_pod_q(), values, Some(&ages), Duration::from_secs(60));
        assert!(r.failure.as_deref().unwrap().contains("stale"), "{r:?}");

        let mut r = reading(Metric::QueueLength);
        fill(&mut r, &per_pod_q(), vector("[]"), None, Duration::from_secs(60));
        assert!(r.failure.as_deref().unwrap().contains("no series"), "{r:?}");

        let mut r = reading(Metric::QueueLength);
        fill(&mut r, &per_pod_q(), vector(r#"[{"metric":{},"value":[1,"3"]}]"#), None, Duration::from_secs(60));
        assert!(r.failure.as_deref().unwrap().contains("`pod` label"), "{r:?}");
    }

    #[test]
    fn fleet_quantiles_nan_and_age() {
        let q = RuleQueries { value: "1000 * (...)".into(), age: Some("time() - ...".into()), per_pod: false };
        let mut r = reading(Metric::Ttft);
        fill(
            &mut r,
            &q,
            vector(r#"[{"metric":{},"value":[1,"812.5"]}]"#),
            Some(&vector(r#"[{"metric":{},"value":[1,"1.5"]}]"#)),
            Duration::from_secs(60),
        );
        assert_eq!((r.fleet, r.age_secs, r.failure.as_deref()), (Some(812.5), Some(1.5), None));

        let mut r = reading(Metric::Ttft);
        assert!(fill(&mut r, &q, vector(r#"[{"metric":{},"value":[1,"NaN"]}]"#), None, Duration::from_secs(60)));
        assert!(r.failure.as_deref().unwrap().contains("no requests finished"), "{r:?}");

        let mut r = reading(Metric::Ttft);
        fill(
            &mut r,
            &q,
            vector(r#"[{"metric":{},"value":[1,"5"]}]"#),
            Some(&vector(r#"[{"metric":{},"value":[1,"400"]}]"#)),
            Duration::from_secs(60),
        );
        assert!(r.failure.as_deref().unwrap().starts_with("stale"), "{r:?}");
    }

    #[test]
    fn custom_results_scalar_per_pod_or_ambiguous() {
        let q = RuleQueries { value: "sum(x)".into(), age: None, per_pod: false };
        let mut r = reading(Metric::Custom);
        let scalar: Data = serde_json::from_str(r#"{"resultType":"scalar","result":[1,"42"]}"#).unwrap();
        fill(&mut r, &q, scalar, None, Duration::from_secs(60));
        assert_eq!(r.fleet, Some(42.0));

        let mut r = reading(Metric::Custom);
        fill(
            &mut r,
            &q,
            vector(r#"[{"metric":{"pod":"a"},"value":[1,"1"]},{"metric":{"pod":"b"},"value":[1,"2"]}]"#),
            None,
            Duration::from_secs(60),
        );
        assert_eq!(r.per_pod.len(), 2);
        assert_eq!(r.fleet, None);

        let mut r = reading(Metric::Custom);
        fill(
            &mut r,
            &q,
            vector(r#"[{"metric":{"x":"a"},"value":[1,"1"]},{"metric":{"x":"b"},"value":[1,"2"]}]"#),
            None,
            Duration::from_secs(60),
        );
        assert!(r.failure.as_deref().unwrap().contains("2 series"), "{r:?}");
    }

    #[test]
    fn answers_are_bounded_and_errors_quoted_in_bounds() {
        let ok = reqwest::StatusCode::OK;
        let json = "application/json";
        let vector = |n: usize| {
            let series: Vec<String> =
                (0..n).map(|i| format!(r#"{{"metric":{{"pod":"p{i}"}},"value":[1,"1"]}}"#)).collect();
            format!(r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#, series.join(","))
        };
        assert!(matches!(parse_answer(ok, json, vector(3).as_bytes(), 3), Ok(Data::Vector(v)) if v.len() == 3));
        let err = parse_answer(ok, json, vector(4).as_bytes(), 3).unwrap_err();
        assert!(err.contains("more than 3 series"), "{err}");
        // A 5 MB error string from Prometheus becomes a bounded failure.
        let huge = format!(r#"{{"status":"error","errorType":"bad_data","error":"{}"}}"#, "e".repeat(5 << 20));
        let err = parse_answer(reqwest::StatusCode::BAD_REQUEST, json, huge.as_bytes(), 10).unwrap_err();
        assert!(err.len() <= 2 * vllm_scaling_core::MAX_REASON_BYTES, "{} bytes", err.len());
        assert!(err.contains("bad_data") && err.contains("more bytes]"), "{}", &err[..200]);
        // A proxy's HTML page, garbage JSON, a 5 MB garbage body.
        let err = parse_answer(reqwest::StatusCode::BAD_GATEWAY, "text/html", b"<html>502</html>", 10).unwrap_err();
        assert!(err.contains("HTTP 502") && err.contains("text/html") && err.contains("<html>502"), "{err}");
        let err = parse_answer(ok, json, b"{\"status\": \"succ", 10).unwrap_err();
        assert!(err.contains("not Prometheus JSON"), "{err}");
        let garbage = "\u{1F4A5}".repeat(2 << 20);
        let err = parse_answer(ok, json, garbage.as_bytes(), 10).unwrap_err();
        assert!(err.len() <= 2 * vllm_scaling_core::MAX_REASON_BYTES, "{} bytes", err.len());
        let err = parse_answer(ok, json, br#"{"status":"success"}"#, 10).unwrap_err();
        assert!(err.contains("without data"), "{err}");
    }

    #[test]
    fn bad_options_are_errors() {
        assert!(matches!(
            PrometheusMetrics::new(PrometheusOptions::new("not a url")),
            Err(Error::PrometheusUrl { .. })
        ));
        let mut o = PrometheusOptions::new("http://127.0.0.1:9");
        o.extra_matchers.push(("bad-name".into(), "x".into()));
        assert!(matches!(PrometheusMetrics::new(o), Err(Error::InvalidOption { .. })));
        for zero in ["max_response_bytes", "max_series", "max_concurrent_queries"] {
            let mut o = PrometheusOptions::new("http://127.0.0.1:9");
            match zero {
                "max_response_bytes" => o.max_response_bytes = 0,
                "max_series" => o.max_series = 0,
                _ => o.max_concurrent_queries = 0,
            }
            assert!(matches!(PrometheusMetrics::new(o), Err(Error::InvalidOption { option, .. }) if option == zero));
        }
    }
}
