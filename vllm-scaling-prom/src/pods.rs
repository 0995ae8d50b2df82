//! The direct pod-scrape adapter: GET each ready pod's `/metrics`, concurrently and with a
//! per-pod timeout, and compute the catalog values (the arithmetic is in [`crate::snapshot`]).
//!
//! A pod is not trusted: its URL must be `http` or `https` with no credentials in it,
//! redirects are never followed, the page is read up to [`PodScrapeOptions::max_page_bytes`]
//! and no further, and it is parsed on tokio's blocking pool within
//! [`PodScrapeOptions::parse_limits`], the per-pod deadline covering fetch and parse: a
//! hostile page costs its own scrape, never the async workers that run the other policies,
//! `/healthz` and the lease.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::StreamExt;
use reqwest::header::ACCEPT;
use vllm_scaling_core::{
    GetScalingMetrics, MetricsRequest, PodInfo, PodPhase, ResolvedRule, ScalingMetrics, Timestamp, error_chain, excerpt,
};

use crate::Error;
use crate::exposition::ParseLimits;
use crate::http::{HttpOptions, build_client};
use crate::reading::{RuleReading, to_scaling_metrics};
use crate::snapshot::{PodObservation, PodSnapshot, SeriesFilter, rule_reading};

/// Settings of the direct scrape.
#[derive(Clone, Debug)]
pub struct PodScrapeOptions {
    /// HTTP settings; `timeout` is the per-pod timeout (default 2 s).
    pub http: HttpOptions,
    /// Pods scraped at once (default 64).
    pub concurrency: usize,
    /// Which series count (by `model_name`).
    pub filter: SeriesFilter,
    /// The largest page accepted, bytes (default 16 MiB): reading stops at the first
    /// byte past it.
    pub max_page_bytes: usize,
    /// What one page may hold (samples, metadata lines, labels per sample).
    pub parse_limits: ParseLimits,
    /// Snapshots kept per pod for rates and quantiles (default 64).
    pub history_per_pod: usize,
}

impl Default for PodScrapeOptions {
    fn default() -> Self {
        Self {
            http: HttpOptions::with_timeout(Duration::from_secs(2)),
            concurrency: 64,
            filter: SeriesFilter::default(),
            max_page_bytes: 16 << 20,
            parse_limits: ParseLimits::default(),
            history_per_pod: 64,
        }
    }
}

/// One pod's scrape.
#[derive(Clone, Debug)]
pub struct PodScrape {
    /// The pod.
    pub name: String,
    /// The URL scraped.
    pub url: String,
    /// The snapshot, or why there is none.
    pub result: Result<Arc<PodSnapshot>, String>,
    /// How long the scrape took.
    pub elapsed: Duration,
}

#[derive(Debug, Default)]
struct PodHistory {
    url: String,
    snapshots: VecDeque<Arc<PodSnapshot>>,
}

/// The direct-scrape [`GetScalingMetrics`]: keeps the previous scrapes of each pod, so
/// rates and latency quantiles come from the difference between two scrapes.
///
/// Pods that are not Running and Ready, are being deleted, or have no `metrics_url` are not
/// scraped (the engine treats them as the HPA treats pods without metrics).
#[derive(Debug)]
pub struct PodScraper {
    client: reqwest::Client,
    options: PodScrapeOptions,
    history: Mutex<HashMap<String, PodHistory>>,
}

impl PodScraper {
    /// A scraper.
    ///
    /// # Errors
    /// When the options are out of range or the HTTP client cannot be built (bad CA, token).
    pub fn new(options: PodScrapeOptions) -> Result<Self, Error> {
        if options.concurrency == 0 {
            return Err(Error::InvalidOption { option: "concurrency", reason: "must be at least 1".into() });
        }
        if options.history_per_pod < 2 {
            return Err(Error::InvalidOption { option: "history_per_pod", reason: "must be at least 2".into() });
        }
        if options.http.timeout.is_zero() {
            return Err(Error::InvalidOption { option: "timeout", reason: "a per-pod timeout is required".into() });
        }
        if options.http.credential_file.is_some() {
            return Err(Error::InvalidOption {
                option: "credential_file",
                reason: "pod scrapes send no credential file (it is for Prometheus)".into(),
            });
        }
        let client = build_client(&options.http, options.concurrency.min(256))?;
        Ok(Self { client, options, history: Mutex::new(HashMap::new()) })
    }

    /// Scrapes the pods that can be scraped, at most `concurrency` at once. A pod that is
    /// slow, hangs or fails delays nobody but itself (up to the per-pod timeout).
    pub async fn scrape(&self, pods: &[PodInfo], now: Timestamp) -> Vec<PodScrape> {
        // Owned names: the futures must not borrow `pods` under a higher-ranked lifetime
        // (async-trait callers need them `Send` for any lifetime).
        let targets: Vec<(String, String)> = pods
            .iter()
            .filter(|p| scrapable(p))
            .filter_map(|p| Some((p.name.clone(), p.metrics_url.clone()?)))
            .collect();
        futures::stream::iter(targets)
            .map(|(name, url)| async move {
                let started = Instant::now();
                let result = self.scrape_one(&url, now).await;
                PodScrape { name, url, result, elapsed: started.elapsed() }
            })
            .buffer_unordered(self.options.concurrency)
            .collect()
            .await
    }

    /// Fetches and parses one page, the per-pod timeout covering both.
    async fn scrape_one(&self, url: &str, now: Timestamp) -> Result<Arc<PodSnapshot>, String> {
        check_url(url)?;
        let timeout = self.options.http.timeout;
        let work = async {
            let body = self.fetch(url).await?;
            let filter = self.options.filter.clone();
            let limits = self.options.parse_limits;
            // Off the async workers: a page at the size cap takes tens of milliseconds to
            // parse, and every other policy's scrape, /healthz and the lease share them.
            tokio::task::spawn_blocking(move || {
                let text = String::from_utf8(body)
                    .map_err(|e| format!("the page is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))?;
                PodSnapshot::from_text_with_limits(&text, &filter, now, limits)
                    .map(Arc::new)
                    .map_err(|e| format!("invalid exposition page: {e}"))
            })
            .await
            .map_err(|e| format!("parsing the page failed: {e}"))?
        };
        // reqwest's timeout covers the body too; this bound also holds if it ever did not,
        // and covers the parse.
        match tokio::time::timeout(timeout + Duration::from_millis(100), work).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} (fetching and parsing the page)", fmt_duration(timeout))),
        }
    }

    /// The page's bytes, at most `max_page_bytes` of them.
    async fn fetch(&self, url: &str) -> Result<Vec<u8>, String> {
        let timeout = self.options.http.timeout;
        {
            let mut resp = self
                .client
                .get(url)
                .header(ACCEPT, "text/plain;version=0.0.4;q=1,*/*;q=0.1")
                .send()
                .await
                .map_err(|e| describe(&e, timeout))?;
            let status = resp.status();
            if status.is_redirection() {
                // Never followed: a pod could send the scrape to any address it names.
                let to = resp.headers().get(reqwest::header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or("");
                return Err(format!(
                    "HTTP {status} from {}: redirects are not followed (to `{}`)",
                    excerpt(url, 200, 1),
                    excerpt(to, 200, 1)
                ));
            }
            if !status.is_success() {
                return Err(format!("HTTP {status} from {}", excerpt(url, 200, 1)));
            }
            let cap = self.options.max_page_bytes;
            if resp.content_length().is_some_and(|n| n > cap as u64) {
                return Err(format!("the page is larger than {cap} bytes (Content-Length)"));
            }
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(|e| describe(&e, timeout))? {
                if body.len() + chunk.len() > cap {
                    return Err(format!("the page is larger than {cap} bytes"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        }
    }

    /// Scrapes `pods` and reads every rule: the per-rule view that `observe` prints.
    pub async fn read(&self, rules: &[ResolvedRule], pods: &[PodInfo], now: Timestamp) -> Vec<RuleReading> {
        let scrapes = self.scrape(pods, now).await;
        self.readings(rules, pods, &scrapes)
    }

    /// Reads the rules from scrapes just taken, then files the scrapes in the history.
    pub fn readings(&self, rules: &[ResolvedRule], pods: &[PodInfo], scrapes: &[PodScrape]) -> Vec<RuleReading> {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let not_scraped: Vec<(&str, String)> = pods
            .iter()
            .filter(|p| !scrapable(p) || p.metrics_url.is_none())
            .map(|p| (p.name.as_str(), unscraped_reason(p)))
            .collect();
        let mut readings: Vec<RuleReading> = {
            let observations: Vec<PodObservation<'_>> = scrapes
                .iter()
                .map(|s| {
                    let earlier = history
                        .get(&s.name)
                        .filter(|h| h.url == s.url)
                        .map(|h| h.snapshots.iter().map(|a| &**a).collect())
                        .unwrap_or_default();
                    PodObservation { name: &s.name, current: s.result.as_deref().map_err(String::as_str), earlier }
                })
                .collect();
            rules.iter().map(|rule| rule_reading(rule, &observations)).collect()
        };
        for r in &mut readings {
            for (name, why) in &not_scraped {
                r.pod_failures.insert((*name).to_owned(), why.clone());
            }
        }
        // File the new snapshots; forget pods that left.
        let window = rules.iter().map(|r| r.window).max().unwrap_or(Duration::from_secs(60));
        for s in scrapes {
            let Ok(snap) = &s.result else { continue };
            let h = history.entry(s.name.clone()).or_default();
            if h.url != s.url {
                // A new pod behind the name (a StatefulSet restart): its counters start over.
                *h = PodHistory { url: s.url.clone(), snapshots: VecDeque::new() };
            }
            file_snapshot(&mut h.snapshots, Arc::clone(snap), window, self.options.history_per_pod);
        }
        history.retain(|name, _| pods.iter().any(|p| &p.name == name));
        readings
    }
}

/// Keeps snapshots spread over the window: a new snapshot closer than window/32 to the
/// one before the latest replaces the latest; snapshots older than needed are dropped,
/// always keeping the newest one at least `window` old (the baseline of a full-window rate).
fn file_snapshot(h: &mut VecDeque<Arc<PodSnapshot>>, snap: Arc<PodSnapshot>, window: Duration, cap: usize) {
    let spacing = window / 32;
    if h.len() >= 2 && snap.at.saturating_duration_since(h[h.len() - 2].at) < spacing {
        h.pop_back();
    }
    h.push_back(snap);
    let cutoff = h.back().map(|s| s.at.saturating_sub(window));
    while h.len() > 2 && cutoff.is_some_and(|c| h[1].at <= c) {
        h.pop_front();
    }
    while h.len() > cap {
        h.pop_front();
    }
}

/// A pod's metrics URL is scraped only when it is `http` or `https` and has a host and no
/// credentials (`PodInfo` may come from a library user, not only from discovery).
fn check_url(url: &str) -> Result<(), String> {
    let refuse = |why: String| Err(format!("refusing to scrape `{}`: {why}", excerpt(url, 200, 1)));
    let parsed = match reqwest::Url::parse(url) {
        Ok(u) => u,
        Err(e) => return refuse(format!("not a URL ({e})")),
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return refuse(format!("scheme `{}` is not http or https", excerpt(parsed.scheme(), 40, 1)));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return refuse("credentials in a metrics URL are not sent".to_owned());
    }
    if parsed.host().is_none() {
        return refuse("no host".to_owned());
    }
    Ok(())
}

fn scrapable(p: &PodInfo) -> bool {
    p.phase == PodPhase::Running && p.ready && !p.deleting
}

fn unscraped_reason(p: &PodInfo) -> String {
    if p.deleting {
        "being deleted: not scraped".to_owned()
    } else if p.phase != PodPhase::Running {
        "not running: not scraped".to_owned()
    } else if !p.ready {
        "not ready: not scraped".to_owned()
    } else if let Some(why) = &p.metrics_url_error {
        format!("no usable metrics endpoint: {}", excerpt(why, 400, 2))
    } else {
        "no metrics URL known".to_owned()
    }
}

fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("timed out after {}", fmt_duration(timeout))
    } else if e.is_connect() {
        // The innermost cause says it all ("Connection refused (os error 111)").
        let mut cause: &dyn std::error::Error = e;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        format!("connection failed: {cause}")
    } else {
        error_chain(e)
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

#[async_trait]
impl GetScalingMetrics for PodScraper {
    type Error = Error;

    /// Never fails as a whole: unreachable pods and missing series become per-rule
    /// failures or pods without values.
    async fn get_scaling_metrics(&self, request: &MetricsRequest, now: Timestamp) -> Result<ScalingMetrics, Error> {
        let readings = self.read(&request.rules, &request.pods, now).await;
        for r in &readings {
            if let Some(why) = &r.failure {
                tracing::debug!(rule = %r.key, reason = %why, "pods source: rule missing");
            }
        }
        Ok(to_scaling_metrics(&readings, &request.pods))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(ms: u64) -> Arc<PodSnapshot> {
        let mut s = PodSnapshot::default();
        s.at = Timestamp::from_millis(ms);
        Arc::new(s)
    }

    fn times(h: &VecDeque<Arc<PodSnapshot>>) -> Vec<u64> {
        h.iter().map(|s| s.at.as_millis()).collect()
    }

    #[test]
    fn history_keeps_the_window_baseline_and_thins_fast_scrapes() {
        let mut h = VecDeque::new();
        let window = Duration::from_secs(60);
        for t in (0..=120_000).step_by(15_000) {
            file_snapshot(&mut h, snap(t), window, 64);
        }
        // 60 s baseline at 60 000 is kept; older ones are gone.
        assert_eq!(times(&h), [60_000, 75_000, 90_000, 105_000, 120_000]);
        // Scrapes 100 ms apart do not pile up: spacing is window/32 = 1.875 s.
        for t in (120_100..=121_000).step_by(100) {
            file_snapshot(&mut h, snap(t), window, 64);
        }
        assert_eq!(times(&h), [60_000, 75_000, 90_000, 105_000, 120_000, 121_000]);
        let mut capped = VecDeque::new();
        for t in (0..20).map(|i| i * 200_000) {
            file_snapshot(&mut capped, snap(t), Duration::from_secs(3600), 8);
        }
        assert_eq!(capped.len(), 8);
    }

    #[test]
    fn options_are_checked() {
        let bad = PodScrapeOptions { concurrency: 0, ..PodScrapeOptions::default() };
        assert!(matches!(PodScraper::new(bad), Err(Error::InvalidOption { option: "concurrency", .. })));
        let no_timeout = PodScrapeOptions { http: HttpOptions::default(), ..PodScrapeOptions::default() };
        assert!(PodScraper::new(no_timeout).is_err());
    }
}
