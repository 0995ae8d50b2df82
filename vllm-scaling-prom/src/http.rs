//! HTTP client settings shared by both adapters: timeout, auth, TLS with a custom CA.

// The credential files are read only by the Prometheus adapter.
#![cfg_attr(not(feature = "prometheus"), allow(dead_code))]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

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
    /// A file the credential is read from, re-read when it changes (a rotated token
    /// needs no restart); sent instead of `bearer_token` and `basic_auth`.
    pub credential_file: Option<CredentialFile>,
}

/// A credential kept in a file (a mounted Kubernetes Secret).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialFile {
    /// A bearer token: the file's content, surrounding whitespace trimmed.
    BearerToken(PathBuf),
    /// HTTP basic auth: `user:password` on one line, or the user on the first line and
    /// the password on the second (a password may hold `:`; the one-line form splits at
    /// the first `:`, since a user cannot hold one).
    BasicAuth(PathBuf),
}

impl CredentialFile {
    /// The file's path.
    #[must_use]
    pub fn path(&self) -> &Path {
        match self {
            Self::BearerToken(p) | Self::BasicAuth(p) => p,
        }
    }

    /// Reads the file now: the `Authorization` header value it makes.
    fn header(&self) -> Result<HeaderValue, Error> {
        let path = self.path();
        let text =
            std::fs::read_to_string(path).map_err(|source| Error::CredentialFile { path: path.to_owned(), source })?;
        let invalid = |reason: &'static str| Error::InvalidCredentialFile { path: path.to_owned(), reason };
        let value = match self {
            Self::BearerToken(_) => {
                let token = text.trim();
                if token.is_empty() {
                    return Err(invalid("the token file is empty"));
                }
                format!("Bearer {token}")
            }
            Self::BasicAuth(_) => {
                let (user, password) = basic_auth_from(&text).map_err(invalid)?;
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }
        };
        let mut v =
            HeaderValue::from_str(&value).map_err(|_| invalid("it holds characters not allowed in an HTTP header"))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

/// `user:password`, or the user and the password on two lines.
fn basic_auth_from(text: &str) -> Result<(&str, &str), &'static str> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    let (user, password) = match text.split_once('\n') {
        Some((user, password)) => (user.strip_suffix('\r').unwrap_or(user), password),
        None => text.split_once(':').ok_or("expected `user:password`, or the user and the password on two lines")?,
    };
    if user.is_empty() {
        return Err("the user is empty");
    }
    if user.contains(':') && text.contains('\n') {
        return Err("the user must not contain `:`");
    }
    if password.contains('\n') {
        return Err("more than two lines: expected `user:password`, or the user and the password on two lines");
    }
    Ok((user, password))
}

/// A [`CredentialFile`] read at start-up and re-read whenever its size or modification
/// time changes (Kubernetes swaps a projected or Secret volume's files atomically). A
/// failed re-read keeps the last good credential and says why in the log.
pub(crate) struct FileCredential {
    file: CredentialFile,
    cached: Mutex<Cached>,
}

struct Cached {
    stamp: Stamp,
    read_at: std::time::Instant,
    header: HeaderValue,
}

/// Re-read at least this often even when the size and modification time look the same
/// (a rewrite within the file system's timestamp granularity keeps both).
const MAX_CREDENTIAL_AGE: Duration = Duration::from_secs(60);

/// What tells a changed file: its size and modification time.
type Stamp = Option<(u64, SystemTime)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl FileCredential {
    /// Reads the file.
    ///
    /// # Errors
    /// An unreadable, empty or malformed file.
    pub(crate) fn load(file: CredentialFile) -> Result<Self, Error> {
        let before = stamp(file.path());
        let header = file.header()?;
        Ok(Self { file, cached: Mutex::new(Cached { stamp: before, read_at: std::time::Instant::now(), header }) })
    }

    /// The `Authorization` header to send now.
    pub(crate) fn header(&self) -> HeaderValue {
        let mut cached = self.cached.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = stamp(self.file.path());
        if now.is_some() && (now != cached.stamp || cached.read_at.elapsed() > MAX_CREDENTIAL_AGE) {
            match self.file.header() {
                Ok(header) => {
                    if header != cached.header {
                        tracing::info!(file = %self.file.path().display(), "the Prometheus credential changed");
                    }
                    *cached = Cached { stamp: now, read_at: std::time::Instant::now(), header };
                }
                Err(e) => tracing::warn!(
                    error = %vllm_scaling_core::error_chain(&e),
                    "re-reading the Prometheus credential file failed; the previous credential is used"
                ),
            }
        }
        cached.header.clone()
    }
}

impl std::fmt::Debug for FileCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCredential").field("file", &self.file).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print credentials.
        f.debug_struct("HttpOptions")
            .field("timeout", &self.timeout)
            .field("bearer_token", &self.bearer_token.as_ref().map(|_| "<redacted>"))
            .field("basic_auth", &self.basic_auth.as_ref().map(|(u, _)| (u, "<redacted>")))
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())))
            .field("credential_file", &self.credential_file)
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
    fn credential_files_make_the_header_and_follow_changes() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "abc\n").unwrap();
        let c = FileCredential::load(CredentialFile::BearerToken(token.clone())).unwrap();
        assert_eq!(c.header(), "Bearer abc");
        std::fs::write(&token, "rotated-token").unwrap();
        assert_eq!(c.header(), "Bearer rotated-token");
        // A broken re-read keeps the last good token.
        std::fs::write(&token, "").unwrap();
        assert_eq!(c.header(), "Bearer rotated-token");
        std::fs::remove_file(&token).unwrap();
        assert_eq!(c.header(), "Bearer rotated-token");
        assert!(matches!(
            FileCredential::load(CredentialFile::BearerToken(token.clone())),
            Err(Error::CredentialFile { .. })
        ));

        let basic = dir.path().join("basic");
        for (text, user_pass) in [
            ("me:pa:ss\n", Some("me:pa:ss")),
            ("me\npa:ss\n", Some("me:pa:ss")),
            ("me\r\npa ss\r\n", Some("me:pa ss")),
            ("me:\n", Some("me:")),
            ("nocolon", None),
            (":pw", None),
            ("a\nb\nc", None),
            ("", None),
        ] {
            std::fs::write(&basic, text).unwrap();
            let got = FileCredential::load(CredentialFile::BasicAuth(basic.clone()));
            match user_pass {
                Some(up) => {
                    assert_eq!(got.unwrap().header(), format!("Basic {}", base64(up.as_bytes())).as_str(), "{text:?}")
                }
                None => assert!(matches!(got, Err(Error::InvalidCredentialFile { .. })), "{text:?}: {got:?}"),
            }
        }
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
