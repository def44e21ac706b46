//! A watch of the EndpointSlices (or any list) from a `resourceVersion`: events taken whole
//! however the stream cuts them, bookmarks, how the watch ended.

use std::net::SocketAddr;

use k8s_openapi::{
    api::discovery::v1::EndpointSlice, apimachinery::pkg::apis::meta::v1::WatchEvent,
};

use super::{
    MAX_RESPONSE, PATH, REQUEST_TIMEOUT, WATCH_IDLE, WATCH_TIMEOUT,
    client::{connect, request},
    kubeconfig::ApiAccess,
};

/// How a watch ended.
#[derive(Debug, PartialEq)]
pub enum WatchEnd {
    /// The server closed it (its `timeoutSeconds`): resume from the last version.
    Closed,
    /// 410 Gone: the version is no longer in the server's cache; list again.
    Expired,
    /// Anything else, with the reason.
    Failed(String),
}

/// A running watch of the `kubernetes` EndpointSlices (or, through [`Watch::open_at`], of
/// any list path's objects `T`).
pub struct Watch<T = EndpointSlice> {
    body: hyper::body::Incoming,
    _conn: crate::net::http::Connection,
    buf: Vec<u8>,
    events: std::collections::VecDeque<WatchEvent<T>>,
}

impl Watch<EndpointSlice> {
    /// Starts a watch at `addr` from `resource_version`.
    ///
    /// # Errors
    /// [`WatchEnd::Expired`] on 410 Gone, [`WatchEnd::Failed`] otherwise.
    pub async fn open(
        access: &ApiAccess,
        addr: SocketAddr,
        name: &str,
        resource_version: &str,
    ) -> Result<Watch, WatchEnd> {
        Self::open_at(access, addr, name, PATH, resource_version).await
    }
}

impl<T: serde::de::DeserializeOwned> Watch<T> {
    /// Starts a watch of `list_path` (a query string allowed) at `addr` from
    /// `resource_version`.
    ///
    /// # Errors
    /// [`WatchEnd::Expired`] on 410 Gone, [`WatchEnd::Failed`] otherwise.
    pub async fn open_at(
        access: &ApiAccess,
        addr: SocketAddr,
        name: &str,
        list_path: &str,
        resource_version: &str,
    ) -> Result<Watch<T>, WatchEnd> {
        let sep = if list_path.contains('?') { '&' } else { '?' };
        let path = format!(
            "{list_path}{sep}watch=1&resourceVersion={resource_version}&allowWatchBookmarks=true&timeoutSeconds={}",
            WATCH_TIMEOUT.as_secs()
        );
        let start = async {
            let tls = connect(access, addr, name).await?;
            let req = request(&path, name, access.bearer_token.as_deref())?;
            crate::net::http::send(tls, req).await.map_err(|e| e.text())
        };
        let (resp, conn) = tokio::time::timeout(REQUEST_TIMEOUT, start)
            .await
            .map_err(|_| {
                WatchEnd::Failed(format!("{addr}: watch: timeout after {REQUEST_TIMEOUT:?}"))
            })?
            .map_err(|e| WatchEnd::Failed(format!("{addr}: watch: {e}")))?;
        match resp.status() {
            hyper::StatusCode::OK => Ok(Watch {
                body: resp.into_body(),
                _conn: conn,
                buf: Vec::new(),
                events: Default::default(),
            }),
            hyper::StatusCode::GONE => Err(WatchEnd::Expired),
            status => Err(WatchEnd::Failed(format!("{addr}: watch: HTTP {status}"))),
        }
    }

    /// The next event (a `BOOKMARK` included; an `ERROR` ends the watch).
    ///
    /// # Errors
    /// How the watch ended.
    pub async fn next(&mut self) -> Result<WatchEvent<T>, WatchEnd> {
        use http_body_util::BodyExt as _;
        loop {
            match self.events.pop_front() {
                Some(WatchEvent::ErrorStatus(st)) if st.code == Some(410) => {
                    return Err(WatchEnd::Expired);
                }
                Some(WatchEvent::ErrorStatus(st)) => {
                    return Err(WatchEnd::Failed(format!(
                        "watch: {}",
                        st.message.unwrap_or_default()
                    )));
                }
                Some(WatchEvent::ErrorOther(_)) => {
                    return Err(WatchEnd::Failed("watch: error event".into()));
                }
                Some(ev) => return Ok(ev),
                None => {}
            }
            let frame = match tokio::time::timeout(WATCH_IDLE, self.body.frame()).await {
                Err(_) => {
                    return Err(WatchEnd::Failed(format!(
                        "watch: silent for {WATCH_IDLE:?}"
                    )));
                }
                Ok(None) => return Err(WatchEnd::Closed),
                Ok(Some(Err(e))) => return Err(WatchEnd::Failed(format!("watch: {e}"))),
                Ok(Some(Ok(f))) => f,
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            self.buf.extend_from_slice(&data);
            if self.buf.len() > MAX_RESPONSE {
                return Err(WatchEnd::Failed("watch: event too large".into()));
            }
            take_events(&mut self.buf, &mut self.events)?;
        }
    }
}

/// Moves the complete events (JSON objects, one after the other, however the stream cut
/// them) out of `buf` into `out`.
fn take_events<T: serde::de::DeserializeOwned>(
    buf: &mut Vec<u8>,
    out: &mut std::collections::VecDeque<WatchEvent<T>>,
) -> Result<(), WatchEnd> {
    let mut events = serde_json::Deserializer::from_slice(buf).into_iter::<WatchEvent<T>>();
    let mut used = 0;
    let mut bad = None;
    while let Some(ev) = events.next() {
        match ev {
            Ok(ev) => {
                out.push_back(ev);
                used = events.byte_offset();
            }
            Err(e) if e.is_eof() => break,
            Err(e) => {
                bad = Some(e);
                break;
            }
        }
    }
    buf.drain(..used);
    match bad {
        Some(e) => Err(WatchEnd::Failed(format!("watch: bad event: {e}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_events_are_taken_whole_however_the_stream_cuts_them() {
        let stream = concat!(
            r#"{"type":"MODIFIED","object":{"metadata":{"name":"kubernetes","resourceVersion":"7"},"addressType":"IPv4","endpoints":[{"addresses":["10.0.0.11"]}]}}"#,
            "\n",
            r#"{"type":"BOOKMARK","object":{"kind":"EndpointSlice","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"8"}}}"#,
            "\n",
            r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"Expired","code":410}}"#,
            "\n"
        )
        .as_bytes();
        for cut in 1..stream.len() {
            let (mut buf, mut out) = (Vec::new(), std::collections::VecDeque::new());
            for part in [&stream[..cut], &stream[cut..]] {
                buf.extend_from_slice(part);
                take_events::<EndpointSlice>(&mut buf, &mut out).unwrap();
            }
            assert!(buf.iter().all(u8::is_ascii_whitespace), "{cut}");
            assert_eq!(out.len(), 3, "{cut}");
            assert!(
                matches!(&out[0], WatchEvent::Modified(s) if s.endpoints.as_ref().unwrap().len() == 1)
            );
            assert!(
                matches!(&out[1], WatchEvent::Bookmark { resource_version, .. } if resource_version == "8")
            );
            assert!(matches!(&out[2], WatchEvent::ErrorStatus(s) if s.code == Some(410)));
        }
        let mut buf = b"{\"type\":\"MODIFIED\",\"object\":17}\n".to_vec();
        let r = take_events::<EndpointSlice>(&mut buf, &mut Default::default());
        assert!(matches!(r, Err(WatchEnd::Failed(m)) if m.contains("bad event")));
    }
}
