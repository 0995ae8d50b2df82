//! HTTP client settings shared by both adapters: timeout, auth, TLS with a custom CA.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::Error;

/// How to reach an HTTP endpoint (Prometheus, or the pods' `/metrics`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// The whole-request timeout.
    pub timeout: Duration,
    /// `Authorization: Bearer <token>`.
    pub bearer_token: Option<String>,
    /// HTTP basic auth: user and password.
    pub basic_auth: Option<(String, String)>,
    /// Extra trusted CA certificates, PEM (added to the system's roots).
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("HttpOptions")
            .field("timeout", &self.timeout)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())))
            .finish()
    }
}

impl HttpOptions {
    /// Options with only a timeout.
    #[must_use]
    pub fn with_timeout(timeout: Duration) -> Self {
        Self { timeout, ..Self::default() }
    }
}

/// Builds a reqwest client with rustls on `ring` (the provider kube uses too).
pub(crate) fn build_client(options: &HttpOptions, pool_idle_per_host: usize) -> Result<reqwest::Client, Error> {
    let mut roots = rustls::RootCertStore::empty();
    // The system's roots, where there are any; a custom CA may be all that is wanted.
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::trace!(added, "system root certificates");
    if let Some(pem) = &options.ca_pem {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<_, _>>()
            .map_err(|source| Error::CaBundle { source })?;
        if certs.is_empty() {
            return Err(Error::EmptyCaBundle);
        }
        for cert in certs {
            roots.add(cert).map_err(|source| Error::CaCertificate { source })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|source| Error::Tls { source })?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut headers = HeaderMap::new();
    if let Some(token) = &options.bearer_token {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| Error::InvalidCredentials("the bearer token has characters not allowed in a header"))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    if let Some((user, password)) = &options.basic_auth {
        let mut v = HeaderValue::from_str(&format!("Basic {}", base64(format!("{user}:{password}").as_bytes())))
            .map_err(|_| Error::InvalidCredentials("the basic-auth user or password cannot be sent in a header"))?;
        v.set_sensitive(true);
        headers.insert(AUTHORIZATION, v);
    }
    let mut builder = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .default_headers(headers)
        .no_proxy()
        // Redirects are never followed, by either adapter: a pod's answer must not send the
        // scrape to another address (SSRF), and a Prometheus URL that redirects is a
        // misconfiguration better reported (with the `Location`) than followed with the
        // credentials' fate left to the redirect rules (a POSTed query would turn into a
        // body-less GET anyway).
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(pool_idle_per_host)
        .tcp_nodelay(true);
    if !options.timeout.is_zero() {
        builder = builder.timeout(options.timeout).connect_timeout(options.timeout);
    }
    builder.build().map_err(|source| Error::BuildClient { source })
}

/// Standard base64 with padding (RFC 4648), for basic auth.
fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn bad_ca_and_token_are_errors() {
        let bad = HttpOptions { ca_pem: Some(b"not a certificate".to_vec()), ..HttpOptions::default() };
        assert!(matches!(build_client(&bad, 1), Err(Error::EmptyCaBundle)));
        let broken = HttpOptions {
            ca_pem: Some(b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n".to_vec()),
            ..HttpOptions::default()
        };
        assert!(build_client(&broken, 1).is_err());
        let token = HttpOptions { bearer_token: Some("a\nb".to_owned()), ..HttpOptions::default() };
        assert!(matches!(build_client(&token, 1), Err(Error::InvalidCredentials(_))));
        assert!(build_client(&HttpOptions::with_timeout(Duration::from_secs(1)), 1).is_ok());
    }

    #[test]
    fn debug_redacts_credentials() {
        let o = HttpOptions {
            bearer_token: Some("s3cret".into()),
            basic_auth: Some(("me".into(), "hunter2".into())),
            ..HttpOptions::default()
        };
        let text = format!("{o:?}");
        assert!(!text.contains("s3cret") && !text.contains("hunter2"), "{text}");
    }
}
