//! One request with the load generator's client (fortio's `curl` mode), returning the whole
//! response: handy for checks and scripts (`loadtest curl -h2 URL`).

use bytes::Bytes;
use http::{HeaderMap, StatusCode, Version};
use http_body_util::BodyExt;

use super::LoadError;
use super::connect::{Dialer, Protocol};
use super::options::LoadOptions;
use super::request::RequestTemplate;

/// A complete response.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Result<Fetched, hyper::Error> {
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Fetched {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    })
}

/// Sends one request as a load run would (same headers, payload, protocol, proxy, timeout).
pub async fn curl(options: &LoadOptions) -> Result<Fetched, LoadError> {
    let dialer = Dialer {
        target: options.target.clone(),
        socks5: options.socks5.clone(),
        protocol: if options.h2 {
            Protocol::Http2
        } else {
            Protocol::Http1
        },
        timeout: options.timeout,
    };
    let template = RequestTemplate::new(options)?;
    let target = options.target.authority.clone();
    let exchange = async {
        let mut connected = dialer.dial_hyper().await?;
        let handshake = |source| LoadError::Handshake {
            target: target.clone(),
            source,
        };
        connected
            .connection
            .exchange(template.build(), collect)
            .await
            .map_err(handshake)
    };
    tokio::time::timeout(options.timeout, exchange)
        .await
        .map_err(|_| LoadError::ConnectTimeout {
            target: target.clone(),
            timeout: options.timeout,
        })?
}
