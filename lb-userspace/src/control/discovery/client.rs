//! Requests to the API servers: whom to ask and in which order ([`targets`]), TLS to each,
//! one `GET` per connection through hyper with answers bounded, the EndpointSlice list and
//! one-off objects.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::{List, api::discovery::v1::EndpointSlice};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{DiscoveryError, MAX_RESPONSE, PATH, REQUEST_TIMEOUT, kubeconfig::ApiAccess};

/// The ready masters of an EndpointSlice list: the addresses (IPv4 and IPv6 slices) of
/// endpoints whose `ready` condition is not false, at the slice's `https` port (6443 when
/// it names none).
pub fn ready_masters(list: &List<EndpointSlice>) -> BTreeSet<SocketAddr> {
    ready_masters_of(&list.items)
}

/// [`ready_masters`] of any set of slices.
pub fn ready_masters_of<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for slice in slices {
        if slice.address_type != "IPv4" && slice.address_type != "IPv6" {
            continue;
        }
        let ports = slice.ports.as_deref().unwrap_or_default();
        let port = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| ports.first())
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(lb_common::DEFAULT_PORT);
        for ep in slice.endpoints.as_deref().unwrap_or_default() {
            if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for a in &ep.addresses {
                if let Ok(ip) = a.parse::<IpAddr>()
                    && ip.is_ipv4() == (slice.address_type == "IPv4")
                {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out
}

/// A TLS connection to `addr` (`name`: for SNI and verification).
pub async fn connect(
    access: &ApiAccess,
    addr: SocketAddr,
    name: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let server_name = match name.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_string()).map_err(|e| e.to_string())?,
    };
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let _ = tcp.set_nodelay(true);
    TlsConnector::from(access.tls.clone())
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}

/// One GET of [`PATH`] from `addr` (`name`: for SNI/verification and `Host`).
async fn get_list(
    access: &ApiAccess,
    addr: SocketAddr,
    name: &str,
) -> Result<List<EndpointSlice>, String> {
    let tls = connect(access, addr, name).await?;
    let body = get_body(tls, name, access.bearer_token.as_deref()).await?;
    serde_json::from_slice(&body).map_err(|e| format!("bad EndpointSlice list: {e}"))
}

/// A `GET` of `path` with discovery's headers.
pub(super) fn request(
    path: &str,
    host: &str,
    bearer: Option<&str>,
) -> Result<hyper::Request<http_body_util::Empty<bytes::Bytes>>, String> {
    let mut req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "xvip-discovery")
        .header(hyper::header::ACCEPT, "application/json")
        .header(hyper::header::CONNECTION, "close");
    if let Some(t) = bearer {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(http_body_util::Empty::new())
        .map_err(|e| format!("bad request: {e}"))
}

/// `GET` [`PATH`] on `io` through hyper: the body of a 200 answer (sized, chunked or to
/// the end), at most [`MAX_RESPONSE`] bytes.
async fn get_body<I>(io: I, host: &str, bearer: Option<&str>) -> Result<bytes::Bytes, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    get_path(io, PATH, host, bearer).await
}

/// `GET path` on `io`: the body of a 200 answer, at most [`MAX_RESPONSE`] bytes.
async fn get_path<I>(
    io: I,
    path: &str,
    host: &str,
    bearer: Option<&str>,
) -> Result<bytes::Bytes, String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let req = request(path, host, bearer)?;
    let (resp, _conn) = crate::net::http::send(io, req)
        .await
        .map_err(|e| e.text())?;
    let status = resp.status();
    if status != hyper::StatusCode::OK {
        return Err(format!("HTTP {status}"));
    }
    crate::net::http::body(resp, MAX_RESPONSE)
        .await
        .map_err(|e| e.text())
}

/// Where to ask, in order: the `candidates` (the daemon's healthy masters, each at its own
/// address: the kubeconfig's server is usually the VIP, which the node holding it cannot
/// reach through its own XDP program), then the kubeconfig's server's addresses not among
/// them. Each with the TLS name to verify (`tls-server-name`, else the address or host
/// asked). Beside the list, why the server's name did not resolve, when it did not.
pub async fn targets(
    access: &ApiAccess,
    candidates: &[SocketAddr],
) -> (Vec<(SocketAddr, String)>, Option<String>) {
    let name_for = |asked: String| access.tls_server_name.clone().unwrap_or(asked);
    let mut out: Vec<(SocketAddr, String)> = candidates
        .iter()
        .map(|a| (*a, name_for(a.ip().to_string())))
        .collect();
    match tokio::net::lookup_host((access.server_host.as_str(), access.server_port)).await {
        Ok(addrs) => {
            for a in addrs {
                if !out.iter().any(|(t, _)| *t == a) {
                    out.push((a, name_for(access.server_host.clone())));
                }
            }
            (out, None)
        }
        Err(e) => (out, Some(format!("{}: {e}", access.server_host))),
    }
}

/// Asks the `candidates` (healthy backends) in turn, then the kubeconfig's server.
///
/// # Errors
/// [`DiscoveryError::NoAnswer`] with every server's reason.
pub async fn poll_once(
    access: &ApiAccess,
    candidates: &[SocketAddr],
) -> Result<BTreeSet<SocketAddr>, DiscoveryError> {
    list_once(access, candidates)
        .await
        .map(|l| ready_masters(&l.list))
}

/// A list and who answered it (to watch there).
pub struct Listed {
    /// The EndpointSlices, with the version to watch from.
    pub list: List<EndpointSlice>,
    /// The API server that answered.
    pub addr: SocketAddr,
    /// TLS name and `Host` used for `addr`.
    pub name: String,
}

/// Like [`poll_once`], keeping the list and who answered.
///
/// # Errors
/// [`DiscoveryError::NoAnswer`] with every server's reason.
pub async fn list_once(
    access: &ApiAccess,
    candidates: &[SocketAddr],
) -> Result<Listed, DiscoveryError> {
    let (targets, unresolved) = targets(access, candidates).await;
    let mut reasons: Vec<String> = unresolved.into_iter().collect();
    for (addr, name) in targets {
        match tokio::time::timeout(REQUEST_TIMEOUT, get_list(access, addr, &name)).await {
            Ok(Ok(list)) => return Ok(Listed { list, addr, name }),
            Ok(Err(e)) => reasons.push(format!("{addr}: {e}")),
            Err(_) => reasons.push(format!("{addr}: timeout after {REQUEST_TIMEOUT:?}")),
        }
    }
    Err(DiscoveryError::NoAnswer(reasons.join("; ")))
}

/// One `GET path` (a JSON object of the API) from the first of the `candidates`, then the
/// kubeconfig's server, that answers; `Ok(None)` when one answered 404 (no such object).
/// For `xvip doctor`'s one-off reads.
///
/// # Errors
/// [`DiscoveryError::NoAnswer`] with every server's reason.
pub async fn get_object(
    access: &ApiAccess,
    candidates: &[SocketAddr],
    path: &str,
) -> Result<Option<bytes::Bytes>, DiscoveryError> {
    let mut reasons = Vec::new();
    let (targets, _) = targets(access, candidates).await;
    for (addr, name) in targets {
        let get = async {
            let tls = connect(access, addr, &name).await?;
            get_path(tls, path, &name, access.bearer_token.as_deref()).await
        };
        match tokio::time::timeout(REQUEST_TIMEOUT, get).await {
            Ok(Ok(body)) => return Ok(Some(body)),
            Ok(Err(e)) if e.starts_with("HTTP 404") => return Ok(None),
            Ok(Err(e)) => reasons.push(format!("{addr}: {e}")),
            Err(_) => reasons.push(format!("{addr}: timeout after {REQUEST_TIMEOUT:?}")),
        }
    }
    Err(DiscoveryError::NoAnswer(reasons.join("; ")))
}

/// What [`get_body`] makes of `answer` from a fake server that then closes.
#[cfg(test)]
async fn body_of(answer: &[u8]) -> Result<bytes::Bytes, String> {
    let (client, server) = tokio::io::duplex(1 << 16);
    crate::net::http::answer_after_request(server, vec![answer.to_vec()]);
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        get_body(client, "192.0.2.1", None),
    )
    .await
    .expect("an answer or an error, never a hang")
}

/// Bounded fuzzing of the answer's reading (hyper's parser and body decoding, and our
/// error texts): whatever the API server (or an impostor on its address) answers.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::fuzz::Rng;

    const SIZED: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"items\":1}";
    const CHUNKED: &[u8] =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\n{\"it\r\n7\r\nems\":1}\r\n0\r\n\r\n";

    #[tokio::test]
    async fn truncated_answers_are_errors_never_a_short_body() {
        for full in [SIZED, CHUNKED] {
            let body = body_of(full).await.unwrap();
            assert_eq!(&body[..], b"{\"items\":1}");
            for cut in 0..full.len() {
                match body_of(&full[..cut]).await {
                    Err(e) => assert!(!e.is_empty() && !e.contains('\n'), "{e:?}"),
                    // Only the chunked end marker's last bytes may be missing.
                    Ok(b) => assert_eq!(b, body, "{cut} bytes"),
                }
            }
        }
    }

    #[tokio::test]
    async fn random_and_mutated_answers_never_panic_and_errors_are_one_line() {
        let interesting: &[&[u8]] = &[
            b"\r\n",
            b"\r\n\r\n",
            b"ffffffffffffffff",
            b"Content-Length: 99999999999999999999\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"-1",
            b"\xff\xfe",
        ];
        let mut rng = Rng::new(0xd15c);
        let (mut ok, mut err) = (0, 0);
        for case in 0..2_000 {
            let buf = match case % 5 {
                0 => rng.bytes(200),
                1 | 2 => rng.mutate(SIZED, interesting),
                _ => rng.mutate(CHUNKED, interesting),
            };
            match body_of(&buf).await {
                Ok(body) => {
                    ok += 1;
                    assert!(body.len() <= buf.len(), "case {case}");
                }
                Err(e) => {
                    err += 1;
                    assert!(!e.is_empty() && !e.contains('\n'), "case {case}: {e:?}");
                }
            }
        }
        assert!(ok > 50 && err > 50, "{ok} ok, {err} errors");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunked_and_sized_answers_are_decoded_and_errors_named() {
        let sized = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA";
        assert_eq!(&body_of(sized).await.unwrap()[..], b"hello");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(&body_of(chunked).await.unwrap()[..], b"hello");
        let e = body_of(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap_err();
        assert_eq!(e, "HTTP 403 Forbidden");
        assert!(
            body_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhi")
                .await
                .is_err()
        );
    }
}
