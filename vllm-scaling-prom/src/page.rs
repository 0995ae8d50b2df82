//! One capped, timed `GET` of a metrics page over plain hyper: what the GPU-exporter lookup
//! (vllm-scaling-kube) and the exporter's re-export of vLLM pods (vllm-scaling-nvml) both do.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use vllm_scaling_core::error_chain;

/// The hyper client [`fetch_page`] takes: plain HTTP, empty request bodies.
pub type PageClient = Client<HttpConnector, Empty<Bytes>>;

/// `GET url` and return the body as text: a non-2xx status, a body over `max_bytes`, a page
/// that is not UTF-8, or no whole answer within `timeout` is an error sentence naming the URL.
///
/// # Errors
/// A sentence saying which step failed and why.
pub async fn fetch_page(client: &PageClient, url: &str, max_bytes: usize, timeout: Duration) -> Result<String, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let work = async {
        let response = client.get(uri).await.map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url}: HTTP {}", response.status()));
        }
        let body = Limited::new(response.into_body(), max_bytes)
            .collect()
            .await
            .map_err(|e| format!("reading {url}: {e}"))?
            .to_bytes();
        String::from_utf8(body.to_vec()).map_err(|_| format!("{url} returned a page that is not UTF-8"))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("GET {url}: no answer within {timeout:?}")),
    }
}
