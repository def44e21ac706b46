//! The API calls of `--services`: one request per connection to the kubeconfig's server
//! over [`crate::http`] and discovery's TLS ([`crate::control::discovery::connect`]),
//! bounded in time and size.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;

use crate::control::discovery::{ApiAccess, REQUEST_TIMEOUT};

/// Every Service of the cluster (list and watch).
pub const SERVICES_PATH: &str = "/api/v1/services";
/// Largest answer read: a list of [`super::MAX_SERVICES`] Services of a few KiB each.
pub const MAX_RESPONSE: usize = 16 << 20;

/// Where to ask: the kubeconfig's server, resolved, and the TLS name for it.
///
/// # Errors
/// The name does not resolve.
pub async fn server(access: &ApiAccess) -> Result<(SocketAddr, String), String> {
    let addr = tokio::net::lookup_host((access.server_host.as_str(), access.server_port))
        .await
        .map_err(|e| format!("{}: {e}", access.server_host))?
        .next()
        .ok_or_else(|| format!("{}: no address", access.server_host))?;
    let name = access
        .tls_server_name
        .clone()
        .unwrap_or_else(|| access.server_host.clone());
    Ok((addr, name))
}

/// One request: the answer's status code and body.
///
/// # Errors
/// The connection, TLS or HTTP failed, or the answer was too large or too late.
pub async fn call(
    access: &ApiAccess,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), String> {
    let (addr, name) = server(access).await?;
    let go = async {
        let tls = crate::control::discovery::connect(access, addr, &name).await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &name)
            .header(hyper::header::USER_AGENT, "xvip-services")
            .header(hyper::header::ACCEPT, "application/json")
            .header(hyper::header::CONNECTION, "close");
        if body.is_some() {
            req = req.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        if let Some(t) = &access.bearer_token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| format!("bad request: {e}"))?;
        let (resp, _conn) = crate::http::send(tls, req).await.map_err(|e| e.text())?;
        let status = resp.status().as_u16();
        let body = crate::http::body(resp, MAX_RESPONSE)
            .await
            .map_err(|e| e.text())?;
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(REQUEST_TIMEOUT * 5, go)
        .await
        .map_err(|_| format!("{addr}: {path}: timeout"))?
        .map_err(|e| format!("{addr}: {path}: {e}"))
}
