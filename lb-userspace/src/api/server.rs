//! The status endpoint: `/metrics`, `/status` (JSON) and `/healthz` over hyper, and the
//! file where a daemon records its address for `xvip status --interface`.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, header};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::document::Status;

/// Produces the current status on demand.
pub type StatusSource = Arc<dyn Fn() -> Status + Send + Sync>;

/// Connections served at once. One more evicts the oldest, so idle clients cannot lock
/// out a scraper.
pub const MAX_CONNECTIONS: usize = 64;
/// Time a client has to send its request (and to read the answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest request head (request line and headers) read.
pub const MAX_REQUEST_BYTES: usize = 8192;

/// The answer to a request that hyper parsed: `GET` only.
fn route(
    req: &hyper::Request<hyper::body::Incoming>,
    source: &StatusSource,
) -> Response<Full<Bytes>> {
    let plain = |code: StatusCode, body: String| (code, "text/plain", body);
    let (code, ctype, body) = if req.method() != hyper::Method::GET {
        plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "405 Method Not Allowed\n".into(),
        )
    } else {
        match req.uri().path() {
            "/metrics" => (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                source().to_prometheus(),
            ),
            "/status" => (
                StatusCode::OK,
                "application/json",
                serde_json::to_string_pretty(&source()).unwrap_or_default(),
            ),
            // Rendering the status takes the daemon's state lock: a stuck main loop makes
            // this hang, and the liveness probe notices.
            "/healthz" => {
                let _ = source();
                plain(StatusCode::OK, "ok\n".into())
            }
            _ => plain(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    if code == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, header::HeaderValue::from_static("GET"));
    }
    resp
}

async fn answer(mut conn: tokio::net::TcpStream, source: StatusSource) {
    let service = hyper::service::service_fn(|req| {
        let resp = route(&req, &source);
        async move { Ok::<_, std::convert::Infallible>(resp) }
    });
    // One request per connection; hyper answers a malformed head with 400 and one over
    // MAX_REQUEST_BYTES with 431, and drops a client that is silent for REQUEST_TIMEOUT.
    let served = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .title_case_headers(true)
        .max_buf_size(MAX_REQUEST_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(&mut conn), service);
    // The request's and the answer's time together (a client that stops reading).
    let _ = tokio::time::timeout(2 * REQUEST_TIMEOUT, served).await;
    // Closing with unread bytes (a refused request's rest) would reset the connection
    // before the client reads why: end our side, then read a little of what it still sends.
    let _ = conn.shutdown().await;
    let mut sink = [0u8; 4096];
    let drain = async {
        let mut left = 16 * MAX_REQUEST_BYTES;
        while left > 0 {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), drain).await;
}

/// Serves `/metrics`, `/status` (JSON) and `/healthz` until the task is dropped: `GET` only,
/// at most [`MAX_CONNECTIONS`] at once (a new one evicts the oldest), each with
/// [`REQUEST_TIMEOUT`] to send a request of at most [`MAX_REQUEST_BYTES`].
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    source: StatusSource,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    Ok(tokio::spawn(async move {
        // Connection tasks by arrival; only this loop touches it.
        let mut live: std::collections::VecDeque<tokio::task::AbortHandle> =
            std::collections::VecDeque::new();
        loop {
            let Ok((conn, _)) = listener.accept().await else {
                // Out of descriptors, say: do not spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            live.retain(|t| !t.is_finished());
            while live.len() >= MAX_CONNECTIONS {
                if let Some(oldest) = live.pop_front() {
                    oldest.abort();
                }
            }
            let task = tokio::spawn(answer(conn, source.clone()));
            live.push_back(task.abort_handle());
        }
    }))
}

/// Where a daemon records its status address for `xvip status --interface`: keyed like the
/// pins, by network namespace then interface (`/run/xvip/<netns inode>/<if>.addr`).
pub fn record_path(interface: &str) -> std::path::PathBuf {
    let ns = crate::dataplane::pins::netns_inode().unwrap_or(0);
    std::path::Path::new("/run/xvip")
        .join(ns.to_string())
        .join(format!("{interface}.addr"))
}

/// Records the status address of the daemon serving `interface`.
pub fn record_addr(interface: &str, addr: SocketAddr) {
    let p = record_path(interface);
    if let Some(dir) = p.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = std::fs::write(&p, addr.to_string()) {
        log::debug!("cannot record the status address in {}: {e}", p.display());
    }
}

/// Removes the record of [`record_addr`] (the daemon is stopping).
pub fn forget_addr(interface: &str) {
    let p = record_path(interface);
    let _ = std::fs::remove_file(&p);
    if let Some(dir) = p.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// The status address recorded by the daemon serving `interface`.
///
/// # Errors
/// When no daemon recorded one.
pub fn recorded_addr(interface: &str) -> anyhow::Result<SocketAddr> {
    let p = record_path(interface);
    let text = std::fs::read_to_string(&p).map_err(|e| {
        anyhow::anyhow!("no xvip recorded for {interface} in {} ({e})", p.display())
    })?;
    text.trim()
        .parse()
        .map_err(|e| anyhow::anyhow!("{}: '{}': {e}", p.display(), text.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{client::fetch, document::tests::sample};

    #[tokio::test]
    async fn the_endpoint_serves_status_that_fetch_reads_back() {
        let source: StatusSource = Arc::new(sample);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let task = serve(addr, source).await.unwrap();
        assert_eq!(fetch(addr).await.unwrap(), sample());
        task.abort();
    }
}
