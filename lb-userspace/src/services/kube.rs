//! The API calls of `--services`: one request per connection to the kubeconfig's server
//! over [`crate::http`] and discovery's TLS ([`crate::control::discovery::client::connect`]),
//! bounded in time and size.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;

use crate::control::discovery::kubeconfig::ApiAccess;

/// Every Service of the cluster (list and watch).
pub const SERVICES_PATH: &str = "/api/v1/services";
/// Largest answer read: a list of [`super::MAX_SERVICES`] Services of a few KiB each.
pub const MAX_RESPONSE: usize = 16 << 20;

/// Where to ask, in order ([`crate::control::discovery::client::targets`]; a server name
/// that does not resolve leaves only the `candidates`).
pub async fn targets(access: &ApiAccess, candidates: &[SocketAddr]) -> Vec<(SocketAddr, String)> {
    crate::control::discovery::client::targets(access, candidates)
        .await
        .0
}

/// One request to the first target that answers it: its address and name, the status code
/// and body. A 404 goes on to the next target (a server that does not serve the path, or
/// the object is gone everywhere: then the last 404 is the answer).
///
/// # Errors
/// No target answered: every reason.
pub async fn call_any(
    access: &ApiAccess,
    targets: &[(SocketAddr, String)],
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(SocketAddr, String, u16, Bytes), String> {
    let mut reasons = Vec::new();
    let mut not_found = None;
    for (addr, name) in targets {
        match call(access, *addr, name, method.clone(), path, body.clone()).await {
            Ok((404, b)) => not_found = Some((*addr, name.clone(), 404, b)),
            Ok((code, b)) => return Ok((*addr, name.clone(), code, b)),
            Err(e) => reasons.push(e),
        }
    }
    not_found.ok_or_else(|| {
        if reasons.is_empty() {
            "no API server to ask".to_string()
        } else {
            reasons.join("; ")
        }
    })
}

/// One request to `addr`: the answer's status code and body.
///
/// # Errors
/// The connection, TLS or HTTP failed, or the answer was too large or too late.
pub async fn call(
    access: &ApiAccess,
    addr: SocketAddr,
    name: &str,
    method: hyper::Method,
    path: &str,
    body: Option<Vec<u8>>,
) -> Result<(u16, Bytes), String> {
    let go = async {
        let tls = crate::control::discovery::client::connect(access, addr, name).await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, name)
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
        let (resp, _conn) = crate::net::http::send(tls, req)
            .await
            .map_err(|e| e.text())?;
        let status = resp.status().as_u16();
        let body = crate::net::http::body(resp, MAX_RESPONSE)
            .await
            .map_err(|e| e.text())?;
        Ok::<_, String>((status, body))
    };
    tokio::time::timeout(PER_TARGET, go)
        .await
        .map_err(|_| format!("{addr}: {path}: timeout after {PER_TARGET:?}"))?
        .map_err(|e| format!("{addr}: {path}: {e}"))
}

/// Bound on one request to one API server (a list of a thousand Services included).
pub const PER_TARGET: std::time::Duration = std::time::Duration::from_secs(2);
