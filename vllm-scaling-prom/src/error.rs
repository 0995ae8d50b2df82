//! The adapters' error type.

/// Why an adapter could not be set up or could not read anything at all.
///
/// Per-rule and per-pod problems (a timeout, HTTP 500, an empty result, a stale value) are
/// not errors: they come back as data, as `failures` in the `ScalingMetrics`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The CA bundle is not valid PEM.
    #[error("reading the CA bundle failed")]
    CaBundle {
        /// The PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA bundle holds no certificate.
    #[error("the CA bundle holds no PEM certificate")]
    EmptyCaBundle,
    /// A CA certificate could not be trusted.
    #[error("adding the CA certificate to the trust store failed")]
    CaCertificate {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// The TLS configuration could not be built.
    #[error("setting up TLS failed")]
    Tls {
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
    /// A credential cannot be sent as an HTTP header.
    #[error("invalid credentials: {0}")]
    InvalidCredentials(&'static str),
    /// A credential file could not be read.
    #[error("reading the credential file {} failed", path.display())]
    CredentialFile {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A credential file holds no usable credential.
    #[error("the credential file {} is invalid: {reason}", path.display())]
    InvalidCredentialFile {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: &'static str,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client failed")]
    BuildClient {
        /// The reqwest error.
        #[source]
        source: reqwest::Error,
    },
    /// The Prometheus base URL is not usable.
    #[cfg(feature = "prometheus")]
    #[error("the Prometheus URL `{url}` is invalid")]
    PrometheusUrl {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: prometheus_http_query::Error,
    },
    /// An option is out of range or malformed.
    #[error("invalid option {option}: {reason}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        reason: String,
    },
}
