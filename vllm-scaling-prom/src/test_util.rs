//! A real Prometheus server for integration tests (feature `test-util`).
//!
//! [`PrometheusServer::start`] runs the `prometheus` binary (Debian's `prometheus` package)
//! on 127.0.0.1 with a free port, a temporary storage directory and a generated config that
//! scrapes the given targets; dropping the handle kills the process and removes the
//! directory. When the binary is missing the error says how to install it;
//! [`require`] turns that into a test failure under `CI=true` and a skip elsewhere.
//!
//! ```no_run
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use std::time::Duration;
//! use vllm_scaling_prom::test_util::{PrometheusServer, ScrapeTarget, require};
//!
//! let Some(prometheus) = require(
//!     PrometheusServer::start(&[ScrapeTarget::new("127.0.0.1:8000").label("pod", "vllm-0")], Duration::from_secs(1)).await,
//! ) else {
//!     return; // not installed, and not in CI
//! };
//! prometheus.wait_for("up == 1", Duration::from_secs(20)).await.unwrap();
//! println!("query it at {}", prometheus.url());
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the binaries, for error messages.
pub const INSTALL_HINT: &str = "install Debian's prometheus package: `sudo apt-get install prometheus` \
    (.ci/test.sh does this), or set PROMETHEUS_BIN / PROMTOOL_BIN to the binaries";

/// Why the test server could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestServerError {
    /// The binary is not installed.
    #[error("`{binary}` is not installed: {INSTALL_HINT}")]
    NotInstalled {
        /// The binary looked for.
        binary: &'static str,
    },
    /// A temporary directory or file could not be made.
    #[error("preparing the temporary storage directory failed")]
    TempDir {
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The process could not be started.
    #[error("starting {binary} failed")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The process exited before it was ready.
    #[error("prometheus exited before it was ready ({status}); its log ends with:\n{log_tail}")]
    Exited {
        /// The exit status.
        status: std::process::ExitStatus,
        /// The end of its log.
        log_tail: String,
    },
    /// The process did not become ready in time.
    #[error("prometheus was not ready after {waited:?}; its log ends with:\n{log_tail}")]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log_tail: String,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    HttpClient {
        /// The crate's error.
        #[source]
        source: crate::Error,
    },
    /// A query failed.
    #[error("querying prometheus for `{query}` failed: {reason}")]
    Query {
        /// The PromQL.
        query: String,
        /// Why.
        reason: String,
    },
    /// A query returned nothing in time.
    #[error("`{query}` returned no series within {waited:?}; last result: {last}")]
    Timeout {
        /// The PromQL.
        query: String,
        /// How long we waited.
        waited: Duration,
        /// What the last attempt returned.
        last: String,
    },
}

/// Turns a missing binary into a failure under `CI=true` (tests never pass by skipping
/// there) and into `None` with a note elsewhere; every other error panics.
///
/// # Panics
/// On any error in CI, and on errors other than a missing binary everywhere.
pub fn require<T>(result: Result<T, TestServerError>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(e @ TestServerError::NotInstalled { .. }) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true and a required component is missing: {e}");
            }
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// Finds a binary: `$ENV_VAR`, then `PATH`, then `/usr/bin`.
fn find_binary(binary: &'static str, env_var: &str) -> Result<PathBuf, TestServerError> {
    if let Some(p) = std::env::var_os(env_var).map(PathBuf::from).filter(|p| p.is_file()) {
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file())
        .ok_or(TestServerError::NotInstalled { binary })
}

/// The `promtool` binary (for `promtool check rules` and friends).
///
/// # Errors
/// [`TestServerError::NotInstalled`] with how to install it.
pub fn promtool() -> Result<PathBuf, TestServerError> {
    find_binary("promtool", "PROMTOOL_BIN")
}

/// The `prometheus` binary.
///
/// # Errors
/// [`TestServerError::NotInstalled`] with how to install it.
pub fn prometheus_binary() -> Result<PathBuf, TestServerError> {
    find_binary("prometheus", "PROMETHEUS_BIN")
}

/// One scrape target: `host:port`, a path, and target labels (`pod`, `namespace`...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// `host:port`.
    pub address: String,
    /// The metrics path (default `/metrics`).
    pub metrics_path: String,
    /// Labels Prometheus attaches to every series of the target.
    pub labels: BTreeMap<String, String>,
}

impl ScrapeTarget {
    /// A target at `host:port` with path `/metrics`.
    #[must_use]
    pub fn new(address: impl Into<String>) -> Self {
        Self { address: address.into(), metrics_path: "/metrics".into(), labels: BTreeMap::new() }
    }

    /// Adds a target label (builder style).
    #[must_use]
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(name.into(), value.into());
        self
    }
}

/// What the server runs with.
#[derive(Clone, Debug, Default)]
pub struct PrometheusConfig {
    /// The targets, one scrape job per distinct metrics path and label set.
    pub targets: Vec<ScrapeTarget>,
    /// Scrape and rule-evaluation interval.
    pub scrape_interval: Duration,
    /// Rule files' YAML contents (recording and alerting rules).
    pub rule_files: Vec<String>,
    /// Extra command-line flags.
    pub extra_args: Vec<String>,
}

/// A running Prometheus; killed (and its storage removed) on drop.
#[derive(Debug)]
pub struct PrometheusServer {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
}

fn secs_text(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

fn yaml_str(s: &str) -> String {
    // JSON strings are valid YAML scalars and escape everything that needs it.
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

impl PrometheusConfig {
    /// The `prometheus.yml` text.
    #[must_use]
    pub fn render(&self, rule_paths: &[PathBuf]) -> String {
        let interval = secs_text(self.scrape_interval);
        let mut y = format!("global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n");
        if !rule_paths.is_empty() {
            y.push_str("rule_files:\n");
            for p in rule_paths {
                let _ = writeln!(y, "  - {}", yaml_str(&p.to_string_lossy()));
            }
        }
        y.push_str("scrape_configs:\n");
        for (i, t) in self.targets.iter().enumerate() {
            let _ = write!(
                y,
                "  - job_name: {job}\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n    metrics_path: {path}\n    static_configs:\n      - targets: [{addr}]\n",
                job = yaml_str(&format!("target-{i}")),
                path = yaml_str(&t.metrics_path),
                addr = yaml_str(&t.address),
            );
            if !t.labels.is_empty() {
                y.push_str("        labels:\n");
                for (k, v) in &t.labels {
                    let _ = writeln!(y, "          {}: {}", yaml_str(k), yaml_str(v));
                }
            }
        }
        y
    }
}

fn free_port() -> Result<u16, TestServerError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|source| TestServerError::TempDir { source })?;
    l.local_addr().map(|a| a.port()).map_err(|source| TestServerError::TempDir { source })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

impl PrometheusServer {
    /// Starts Prometheus scraping `targets` every `scrape_interval`, and waits until it is ready.
    ///
    /// # Errors
    /// Not installed, could not start, or not ready within 30 s.
    pub async fn start(targets: &[ScrapeTarget], scrape_interval: Duration) -> Result<Self, TestServerError> {
        Self::start_with(PrometheusConfig { targets: targets.to_vec(), scrape_interval, ..PrometheusConfig::default() })
            .await
    }

    /// Starts Prometheus with a full [`PrometheusConfig`].
    ///
    /// # Errors
    /// Not installed, could not start, or not ready within 30 s.
    pub async fn start_with(config: PrometheusConfig) -> Result<Self, TestServerError> {
        let binary = prometheus_binary()?;
        let mut last_err = None;
        // The free port can be taken between our probe and Prometheus' bind: retry.
        for _ in 0..3 {
            match Self::try_start(&binary, &config).await {
                Ok(s) => return Ok(s),
                Err(e @ TestServerError::Exited { .. }) if e.to_string().contains("address already in use") => {
                    last_err = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or(TestServerError::NotInstalled { binary: "prometheus" }))
    }

    async fn try_start(binary: &Path, config: &PrometheusConfig) -> Result<Self, TestServerError> {
        let dir = tempfile::Builder::new()
            .prefix("vllm-scaling-prometheus-")
            .tempdir()
            .map_err(|source| TestServerError::TempDir { source })?;
        let mut rule_paths = Vec::new();
        for (i, rules) in config.rule_files.iter().enumerate() {
            let p = dir.path().join(format!("rules-{i}.yml"));
            std::fs::write(&p, rules).map_err(|source| TestServerError::TempDir { source })?;
            rule_paths.push(p);
        }
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config.render(&rule_paths))
            .map_err(|source| TestServerError::TempDir { source })?;
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).map_err(|source| TestServerError::TempDir { source })?;
        let log_err = log.try_clone().map_err(|source| TestServerError::TempDir { source })?;
        let port = free_port()?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-lifecycle")
            .arg("--log.level=warn")
            .args(&config.extra_args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|source| TestServerError::Spawn { binary: binary.to_path_buf(), source })?;
        let mut server = Self { child: Some(child), dir, port };
        server.wait_ready(&log_path, Duration::from_secs(30)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, log_path: &Path, limit: Duration) -> Result<(), TestServerError> {
        let client = plain_client()?;
        let started = Instant::now();
        let ready = format!("{}/-/ready", self.url());
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(TestServerError::Exited { status, log_tail: log_tail(log_path) });
            }
            if let Ok(resp) = client.get(&ready).send().await
                && resp.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                return Err(TestServerError::NotReady { waited: limit, log_tail: log_tail(log_path) });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The storage directory (removed on drop).
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Runs an instant query: `(labels, value)` per series (a scalar has no labels).
    ///
    /// # Errors
    /// HTTP or Prometheus errors.
    pub async fn query(&self, promql: &str) -> Result<Vec<(BTreeMap<String, String>, f64)>, TestServerError> {
        let err = |reason: String| TestServerError::Query { query: promql.to_owned(), reason };
        let resp = plain_client()?
            .get(format!("{}/api/v1/query", self.url()))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| err(e.to_string()))?;
        let body: serde_json::Value = resp.json().await.map_err(|e| err(e.to_string()))?;
        if body["status"] != "success" {
            return Err(err(body.to_string()));
        }
        let value = |v: &serde_json::Value| v[1].as_str().and_then(|s| s.parse::<f64>().ok());
        let data = &body["data"];
        match data["resultType"].as_str() {
            Some("scalar") => Ok(value(&data["result"]).map(|v| (BTreeMap::new(), v)).into_iter().collect()),
            Some("vector") => Ok(data["result"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| {
                            let labels = s["metric"]
                                .as_object()?
                                .iter()
                                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                                .collect();
                            Some((labels, value(&s["value"])?))
                        })
                        .collect()
                })
                .unwrap_or_default()),
            other => Err(err(format!("unexpected result type {other:?}"))),
        }
    }

    /// Polls `promql` until it returns at least one series, or `limit` passes.
    ///
    /// # Errors
    /// [`TestServerError::Timeout`] with the last result.
    pub async fn wait_for(
        &self,
        promql: &str,
        limit: Duration,
    ) -> Result<Vec<(BTreeMap<String, String>, f64)>, TestServerError> {
        let started = Instant::now();
        loop {
            let last = match self.query(promql).await {
                Ok(r) if !r.is_empty() => return Ok(r),
                Ok(_) => "no series".to_owned(),
                Err(e) => e.to_string(),
            };
            if started.elapsed() > limit {
                return Err(TestServerError::Timeout { query: promql.to_owned(), waited: limit, last });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process (idempotent). The storage stays until the handle is dropped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn plain_client() -> Result<reqwest::Client, TestServerError> {
    crate::http::build_client(&crate::HttpOptions::with_timeout(Duration::from_secs(5)), 4)
        .map_err(|source| TestServerError::HttpClient { source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_renders_targets_labels_and_rules() {
        let c = PrometheusConfig {
            targets: vec![ScrapeTarget::new("127.0.0.1:9").label("pod", "vllm-0").label("namespace", "ns\"x")],
            scrape_interval: Duration::from_millis(500),
            ..PrometheusConfig::default()
        };
        let y = c.render(&[PathBuf::from("/tmp/r.yml")]);
        assert!(y.contains("scrape_interval: 500ms"), "{y}");
        assert!(y.contains("targets: [\"127.0.0.1:9\"]"), "{y}");
        assert!(y.contains("\"pod\": \"vllm-0\""), "{y}");
        assert!(y.contains("\"namespace\": \"ns\\\"x\""), "{y}");
        assert!(y.contains("rule_files:\n  - \"/tmp/r.yml\""), "{y}");
    }

    #[test]
    fn missing_binary_names_the_package() {
        let e = find_binary("surely-not-a-binary-name", "NO_SUCH_VAR").unwrap_err();
        assert!(e.to_string().contains("apt-get install prometheus"), "{e}");
    }
}
