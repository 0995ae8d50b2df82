//! The crate's error type: one variant per step that can fail, each keeping its cause.

use std::time::Duration;

/// What went wrong, and in which step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy object without a namespace or name (the API server never sends one).
    #[error("the policy object has no {0}")]
    MissingMetadata(&'static str),
    /// A step did not finish within the request timeout.
    #[error("{step} did not finish within {after:?}")]
    Timeout {
        /// The step.
        step: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// An API request failed.
    #[error("{step} failed")]
    Api {
        /// The step (`reading the scale of llama`, `writing the policy status`...).
        step: String,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The leader-election lease could not be read or written.
    #[error("leader election: {step} of the lease failed")]
    Lease {
        /// `read`, `create`, `update` or `release`.
        step: &'static str,
        /// The client's error.
        #[source]
        source: kube::Error,
    },
    /// The metrics endpoint could not be served.
    #[error("serving metrics on {addr} failed")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// The HTTP status of an API error, if this is one.
    #[must_use]
    pub fn api_code(&self) -> Option<u16> {
        match self {
            Self::Api { source: kube::Error::Api(s), .. } | Self::Lease { source: kube::Error::Api(s), .. } => {
                Some(s.code)
            }
            _ => None,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
