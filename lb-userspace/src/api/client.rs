//! `xvip status`'s side: the status document fetched from a running daemon.

use std::{net::SocketAddr, time::Duration};

use hyper::{StatusCode, header};

use super::document::Status;

/// Fetches the status document from a running daemon.
///
/// # Errors
/// When the daemon cannot be reached or answers something else.
pub async fn fetch(addr: SocketAddr) -> anyhow::Result<Status> {
    let conn = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| anyhow::anyhow!("timeout connecting to xvip at {addr}"))?
    .map_err(|e| {
        anyhow::anyhow!(
            "cannot reach xvip at {addr}: {e} (is `xvip run` running, with this --metrics-addr?)"
        )
    })?;
    let _ = conn.set_nodelay(true);
    let req = hyper::Request::get("/status")
        .header(header::HOST, "xvip")
        .header(header::CONNECTION, "close")
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    let exchange = async {
        let (resp, _conn) = crate::net::http::send(conn, req).await?;
        anyhow::ensure!(
            resp.status() == StatusCode::OK,
            "xvip at {addr} answered {}",
            resp.status()
        );
        Ok(crate::net::http::body(resp, 16 << 20).await?)
    };
    let body = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| anyhow::anyhow!("timeout reading the status from xvip at {addr}"))??;
    Ok(serde_json::from_slice(&body)?)
}
