//! Serving the scaler: plaintext only when asked for, TLS (and optionally client
//! certificates, KEDA's `tlsClientCert`) otherwise.

use std::future::Future;
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use vllm_scaling_core::GetScalingMetrics;

use crate::proto::external_scaler_server::ExternalScalerServer;
use crate::service::KedaScaler;

/// Why the scaler could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A certificate or key file could not be read.
    #[error("reading {what} {path}: {source}")]
    Read {
        /// Which file.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TLS configuration or the server failed.
    #[error("the gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The PEM files of the scaler's TLS listener.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain (KEDA checks it against the trigger's `caCert`).
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// When set, clients must present a certificate this CA signed (KEDA's
    /// `tlsClientCert`/`tlsClientKey`).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files into a server TLS configuration.
    ///
    /// # Errors
    /// A file that cannot be read (its contents are checked when the server starts).
    pub fn load(&self) -> Result<ServerTlsConfig, ServeError> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| ServeError::Read { what, path: path.clone(), source })
        };
        let identity = Identity::from_pem(read("the TLS certificate", &self.cert)?, read("the TLS key", &self.key)?);
        let mut config = ServerTlsConfig::new().identity(identity);
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("the client CA", ca)?));
        }
        Ok(config)
    }
}

/// Serves `scaler` on `listener` until `shutdown` completes; `tls: None` serves
/// plaintext (the binary does so only with `--insecure-no-tls`).
///
/// # Errors
/// A TLS configuration the server refuses, or a failing listener.
pub async fn serve<M: GetScalingMetrics + 'static>(
    listener: TcpListener,
    scaler: KedaScaler<M>,
    tls: Option<ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        .add_service(ExternalScalerServer::new(scaler))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await?;
    Ok(())
}
