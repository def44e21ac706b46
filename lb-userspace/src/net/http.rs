//! HTTP/1.1 plumbing over hyper shared by the daemon's three speakers: the health checks'
//! and discovery's client side (one request per connection, over TLS or plain TCP) and the
//! status endpoint's server side. No HTTP is formatted or parsed by hand anywhere else.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use hyper::{Request, Response, body::Incoming};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Errors of one client exchange.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// hyper refused what the peer sent, or the connection broke.
    #[error("{0}")]
    Hyper(#[from] hyper::Error),
    /// The body was longer than allowed, or broke off.
    #[error("body: {0}")]
    Body(String),
}

impl HttpError {
    /// The socket (or TLS) error underneath, if that is what went wrong.
    pub fn io(&self) -> Option<&std::io::Error> {
        let mut e: &(dyn std::error::Error + 'static) = match self {
            HttpError::Hyper(h) => h,
            HttpError::Body(_) => return None,
        };
        loop {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return Some(io);
            }
            e = e.source()?;
        }
    }

    /// One line naming what went wrong: hyper's text with its cause.
    pub fn text(&self) -> String {
        match self {
            HttpError::Hyper(h) => match std::error::Error::source(h) {
                Some(cause) => format!("{h}: {cause}"),
                None => h.to_string(),
            },
            HttpError::Body(why) => format!("body: {why}"),
        }
        .replace('\n', " ")
    }
}

/// The task driving a client connection; aborted when dropped, so a check or poll that
/// times out leaves nothing behind.
pub struct Connection(tokio::task::JoinHandle<()>);

impl Connection {
    /// Lets the connection end by itself (hyper closes it after a `Connection: close`
    /// exchange, sending TLS close_notify), for at most `within`.
    pub async fn finish(mut self, within: Duration) {
        let _ = tokio::time::timeout(within, &mut self.0).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends `req` as the only request on `io` and returns the response head and streaming
/// body, with the task driving the connection. Header names go out title-cased, as most
/// HTTP/1.1 clients send them.
///
/// # Errors
/// When the connection breaks or the answer is not HTTP/1.x.
pub async fn send<I, B>(
    io: I,
    req: Request<B>,
) -> Result<(Response<Incoming>, Connection), HttpError>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await?;
    let conn = Connection(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender.send_request(req).await?;
    Ok((resp, conn))
}

/// The whole body of `resp`, at most `limit` bytes.
///
/// # Errors
/// [`HttpError::Body`] when it is longer or breaks off.
pub async fn body(resp: Response<Incoming>, limit: usize) -> Result<Bytes, HttpError> {
    Limited::new(resp.into_body(), limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            let mut text = e.to_string();
            if let Some(cause) = e.source() {
                text = format!("{text}: {cause}");
            }
            HttpError::Body(text)
        })
}

/// A fake server on the other end of `server`: reads the request head, then writes
/// `pieces` a little apart and closes.
#[cfg(test)]
pub(crate) fn answer_after_request(mut server: tokio::io::DuplexStream, pieces: Vec<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match server.read(&mut b).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&b[..n]),
            }
        }
        for (i, p) in pieces.iter().enumerate() {
            if i > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
            let _ = server.write_all(p).await;
        }
    });
}
