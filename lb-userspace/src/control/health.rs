//! Health checks of the backends (Kubernetes API servers).
//!
//! Each backend gets its own tokio task ([`spawn_checker`]) that probes it every
//! `interval`, feeds the result to a rise/fall [`Tracker`] and reports every result
//! as a [`HealthEvent`]; the daemon turns transitions into Maglev table rebuilds.
//!
//! The default probe is `GET /readyz` over TLS, like the haproxy example in the
//! kubeadm HA guide: an API server that is up but not ready (etcd unreachable,
//! shutting down) answers 503 and must leave the pool before it stops answering
//! altogether. A plain TCP probe also works but makes the API server log a
//! "TLS handshake error ... EOF" per probe.
//!
//! The request goes through hyper ([`crate::net::http`]) over tokio-rustls; the verdict is the
//! response's status.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_rustls::TlsConnector;

/// What a health check does.
#[derive(Debug, Clone)]
pub enum CheckKind {
    /// TLS handshake, then `GET path`; only status 200 counts as healthy.
    Https {
        /// Request path, e.g. `/readyz`.
        path: String,
        /// TLS server name and `Host` header; `None` uses the backend's IP address
        /// (no SNI is sent for IP addresses, and the certificate must list the IP).
        host: Option<String>,
        /// Client configuration, usually from [`crate::net::tls::tls_config`].
        tls: Arc<ClientConfig>,
    },
    /// TCP connect only.
    Tcp,
    /// No probing: the backend is always healthy.
    None,
}

/// How and how often backends are checked.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// The probe.
    pub kind: CheckKind,
    /// Time between the starts of two consecutive checks of one backend.
    pub interval: Duration,
    /// Bound on one whole check (connect, TLS handshake, request, status line).
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy backend back.
    pub rise: u32,
    /// Consecutive failures that take a healthy backend out.
    pub fall: u32,
}

impl HealthSettings {
    /// Default [`interval`](Self::interval): with the default `fall` and `timeout`,
    /// a dead API server leaves the pool within about a second.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(200);
    /// Default [`timeout`](Self::timeout): a local API server answers `/readyz`
    /// in a few milliseconds, so anything slower than this is as good as down.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(300);
    /// Default [`rise`](Self::rise).
    pub const DEFAULT_RISE: u32 = 2;
    /// Default [`fall`](Self::fall): one lost probe must not flap a backend.
    pub const DEFAULT_FALL: u32 = 3;

    /// Settings for `kind` with the default interval, timeout, rise and fall.
    pub fn with_defaults(kind: CheckKind) -> Self {
        HealthSettings {
            kind,
            interval: Self::DEFAULT_INTERVAL,
            timeout: Self::DEFAULT_TIMEOUT,
            rise: Self::DEFAULT_RISE,
            fall: Self::DEFAULT_FALL,
        }
    }
}

/// Why one check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Nothing listens on the backend's port (RST to our SYN).
    Refused,
    /// The whole check did not finish within the given timeout.
    Timeout(Duration),
    /// TLS handshake or certificate problem, or a TLS alert from the server.
    Tls(String),
    /// The server answered with a status other than 200.
    HttpStatus(u16),
    /// The server answered something that is not an HTTP status line.
    BadResponse(String),
    /// Any other socket error (unreachable, reset, ...).
    Io(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused => write!(f, "connection refused"),
            // Debug of a Duration is the readable form ("300ms", "1.5s").
            Failure::Timeout(after) => write!(f, "timeout after {after:?}"),
            Failure::Tls(why) => write!(f, "TLS error: {why}"),
            Failure::HttpStatus(code) => write!(f, "HTTP status {code}"),
            Failure::BadResponse(why) => write!(f, "bad HTTP response: {why}"),
            Failure::Io(why) => write!(f, "I/O error: {why}"),
        }
    }
}

impl std::error::Error for Failure {}

/// Outcome of one check: the latency on success.
pub type CheckResult = Result<Duration, Failure>;

/// Runs one check of `addr` (IPv4 or IPv6), bounded by `settings.timeout`.
pub async fn check_once(addr: impl Into<SocketAddr>, settings: &HealthSettings) -> CheckResult {
    let addr = addr.into();
    let start = Instant::now();
    let probe = async {
        match &settings.kind {
            CheckKind::None => Ok(Duration::ZERO),
            CheckKind::Tcp => {
                connect(addr).await?;
                Ok(start.elapsed())
            }
            CheckKind::Https { path, host, tls } => {
                https_probe(addr, path, host.as_deref(), tls, start).await
            }
        }
    };
    match tokio::time::timeout(settings.timeout, probe).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout(settings.timeout)),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, Failure> {
    let stream = TcpStream::connect(addr).await.map_err(io_failure)?;
    // The TLS handshake is a ping-pong of small writes; Nagle would only add delay.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn https_probe(
    addr: SocketAddr,
    path: &str,
    host: Option<&str>,
    tls: &Arc<ClientConfig>,
    start: Instant,
) -> CheckResult {
    let server_name = match host {
        Some(h) => ServerName::try_from(h.to_owned())
            .map_err(|e| Failure::Tls(format!("invalid server name {h:?}: {e}")))?,
        // The certificate must name the address (an IP SAN), IPv6 as IPv4.
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let tcp = connect(addr).await?;
    let stream = TlsConnector::from(Arc::clone(tls))
        .connect(server_name, tcp)
        .await
        // Everything going wrong during the handshake is a TLS problem, even an EOF:
        // it usually means the server rejected our hello or our client certificate.
        .map_err(|e| Failure::Tls(tls_error_text(&e)))?;
    let host_header = match host {
        Some(h) => format!("{h}:{}", addr.port()),
        // `[2001:db8::11]:6443` for IPv6 (RFC 9110 section 7.2 with RFC 3986 brackets).
        None => addr.to_string(),
    };
    let code = http_status(stream, path, &host_header).await?;
    let latency = start.elapsed();
    if code == 200 {
        Ok(latency)
    } else {
        Err(Failure::HttpStatus(code))
    }
}

/// Sends `GET path` on `io` and returns the answer's status. The connection is closed in
/// the background (close_notify spares the API server an "unexpected EOF" log line; the
/// verdict is already known).
async fn http_status<I>(io: I, path: &str, host: &str) -> Result<u16, Failure>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "xvip-health")
        .header(hyper::header::CONNECTION, "close")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| Failure::BadResponse(format!("bad request for {path:?}: {e}")))?;
    let (resp, conn) = crate::net::http::send(io, req)
        .await
        .map_err(http_failure)?;
    let code = resp.status().as_u16();
    tokio::spawn(async move {
        let _ = crate::net::http::body(resp, 64 << 10).await;
        conn.finish(Duration::from_secs(1)).await;
    });
    Ok(code)
}

/// Classifies a failed exchange: the socket or TLS error underneath, or a broken answer.
fn http_failure(e: crate::net::http::HttpError) -> Failure {
    if let Some(io) = e.io() {
        if io.kind() == io::ErrorKind::ConnectionRefused {
            return Failure::Refused;
        }
        if let Some(tls) = rustls_error(io) {
            return Failure::Tls(tls.to_string());
        }
    }
    match &e {
        crate::net::http::HttpError::Hyper(h) if h.is_incomplete_message() => {
            Failure::BadResponse("connection closed without a complete response".into())
        }
        crate::net::http::HttpError::Hyper(h) if h.is_parse() || h.is_parse_status() => {
            Failure::BadResponse(e.text())
        }
        _ => match e.io() {
            Some(io) => Failure::Io(io.to_string()),
            None => Failure::BadResponse(e.text()),
        },
    }
}

/// Classifies a socket error.
fn io_failure(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::ConnectionRefused {
        return Failure::Refused;
    }
    match rustls_error(&e) {
        Some(tls) => Failure::Tls(tls.to_string()),
        None => Failure::Io(e.to_string()),
    }
}

fn tls_error_text(e: &io::Error) -> String {
    rustls_error(e).map_or_else(|| e.to_string(), ToString::to_string)
}

/// tokio-rustls reports TLS errors (bad certificate, alerts) wrapped in `io::Error`.
fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// A change of a backend's health.
#[derive(Debug, Clone)]
pub struct Transition {
    /// The new state.
    pub healthy: bool,
    /// Human-readable cause, e.g. "HTTP status 503 (3 consecutive failures)".
    pub reason: String,
    /// On a down-transition, when the first check of the failing streak started:
    /// `event time - first_failure_at` is the detection time.
    pub first_failure_at: Option<Instant>,
}

/// Rise/fall hysteresis for one backend. Pure: the caller supplies the results and,
/// through [`Tracker::observe_at`], the clock.
#[derive(Debug, Clone)]
pub struct Tracker {
    rise: u32,
    fall: u32,
    healthy: bool,
    successes: u32,
    failures: u32,
    first_failure_at: Option<Instant>,
}

impl Tracker {
    /// A tracker needing `rise` successes to come up and `fall` failures to go down
    /// (0 is treated as 1).
    pub fn new(rise: u32, fall: u32, initially_healthy: bool) -> Self {
        Tracker {
            rise: rise.max(1),
            fall: fall.max(1),
            healthy: initially_healthy,
            successes: 0,
            failures: 0,
            first_failure_at: None,
        }
    }

    /// The current state.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Feeds one result, timestamped now; returns the transition it caused, if any.
    pub fn observe(&mut self, r: &CheckResult) -> Option<Transition> {
        self.observe_at(r, Instant::now())
    }

    /// Feeds one result of a check that started at `at`.
    pub fn observe_at(&mut self, r: &CheckResult, at: Instant) -> Option<Transition> {
        match r {
            Ok(_) => {
                self.failures = 0;
                self.first_failure_at = None;
                if self.healthy {
                    return None;
                }
                self.successes += 1;
                if self.successes < self.rise {
                    return None;
                }
                self.successes = 0;
                self.healthy = true;
                Some(Transition {
                    healthy: true,
                    reason: format!("{} consecutive {}", self.rise, plural(self.rise, "success")),
                    first_failure_at: None,
                })
            }
            Err(failure) => {
                self.successes = 0;
                if !self.healthy {
                    return None;
                }
                if self.failures == 0 {
                    self.first_failure_at = Some(at);
                }
                self.failures += 1;
                if self.failures < self.fall {
                    return None;
                }
                self.failures = 0;
                self.healthy = false;
                Some(Transition {
                    healthy: false,
                    reason: format!(
                        "{failure} ({} consecutive {})",
                        self.fall,
                        plural(self.fall, "failure")
                    ),
                    first_failure_at: self.first_failure_at.take(),
                })
            }
        }
    }
}

fn plural(n: u32, word: &str) -> String {
    match (n, word.ends_with('s')) {
        (1, _) => word.to_owned(),
        (_, true) => format!("{word}es"),
        (_, false) => format!("{word}s"),
    }
}

/// One check result of one backend.
#[derive(Debug, Clone)]
pub struct HealthEvent {
    /// The backend checked (IPv4 or IPv6).
    pub backend: SocketAddr,
    /// The result of the check.
    pub result: CheckResult,
    /// The state change this result caused, if any.
    pub transition: Option<Transition>,
    /// When the result became known.
    pub at: Instant,
}

/// Spawns the checker task of one backend.
///
/// Every result is sent on `tx`; a full channel pauses the checks rather than
/// dropping events, because a lost transition would leave the daemon's view wrong.
/// A check starts `interval` after the previous one started, or right after it
/// ended if it took longer, so one backend never has two checks in flight. The task
/// ends when the handle is aborted or the receiver is closed.
pub fn spawn_checker(
    backend: impl Into<SocketAddr>,
    settings: Arc<HealthSettings>,
    initially_healthy: bool,
    tx: mpsc::Sender<HealthEvent>,
) -> JoinHandle<()> {
    let backend = backend.into();
    tokio::spawn(async move {
        let mut tracker = Tracker::new(settings.rise, settings.fall, initially_healthy);
        // tokio's interval panics on zero.
        let mut ticker = tokio::time::interval(settings.interval.max(Duration::from_millis(1)));
        // Delay (not Burst): after a slow check, do not fire the missed ticks back to back.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = tx.closed() => return,
                _ = ticker.tick() => {}
            }
            let started = Instant::now();
            let result = tokio::select! {
                biased;
                _ = tx.closed() => return,
                r = check_once(backend, &settings) => r,
            };
            let transition = tracker.observe_at(&result, started);
            let event = HealthEvent {
                backend,
                result,
                transition,
                at: Instant::now(),
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::tls::{TlsConfigError, tls_config};
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::{RootCertStore, ServerConfig};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU32, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    // ---- Tracker ----

    fn fail() -> CheckResult {
        Err(Failure::HttpStatus(503))
    }

    fn ok() -> CheckResult {
        Ok(Duration::from_millis(1))
    }

    #[test]
    fn tracker_starts_in_the_given_state() {
        assert!(Tracker::new(2, 3, true).healthy());
        assert!(!Tracker::new(2, 3, false).healthy());
    }

    #[test]
    fn tracker_goes_down_after_exactly_fall_consecutive_failures() {
        let mut t = Tracker::new(2, 3, true);
        assert!(t.observe(&fail()).is_none());
        assert!(t.observe(&fail()).is_none());
        assert!(t.healthy());
        let down = t.observe(&fail()).expect("third failure must transition");
        assert!(!down.healthy);
        assert!(!t.healthy());
        assert_eq!(down.reason, "HTTP status 503 (3 consecutive failures)");
        // Further failures while down are not new transitions.
        assert!(t.observe(&fail()).is_none());
    }

    #[test]
    fn tracker_success_between_failures_resets_the_fall_count() {
        let mut t = Tracker::new(2, 3, true);
        for _ in 0..2 {
            assert!(t.observe(&fail()).is_none());
        }
        assert!(t.observe(&ok()).is_none());
        for _ in 0..2 {
            assert!(t.observe(&fail()).is_none());
        }
        assert!(
            t.healthy(),
            "2 + 2 failures split by a success must not go down"
        );
        assert!(t.observe(&fail()).is_some());
    }

    #[test]
    fn tracker_comes_up_after_exactly_rise_consecutive_successes() {
        let mut t = Tracker::new(2, 3, false);
        assert!(t.observe(&ok()).is_none());
        assert!(
            t.observe(&fail()).is_none(),
            "failure while down is no transition"
        );
        assert!(
            t.observe(&ok()).is_none(),
            "the failure reset the rise count"
        );
        let up = t
            .observe(&ok())
            .expect("second consecutive success must transition");
        assert!(up.healthy);
        assert!(t.healthy());
        assert_eq!(up.reason, "2 consecutive successes");
        assert!(up.first_failure_at.is_none());
        assert!(t.observe(&ok()).is_none());
    }

    #[test]
    fn tracker_first_failure_at_is_the_start_of_the_failing_streak() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut t = Tracker::new(1, 2, true);
        // An interrupted streak must not leak its start into the next one.
        assert!(t.observe_at(&fail(), at(0)).is_none());
        assert!(t.observe_at(&ok(), at(10)).is_none());
        assert!(t.observe_at(&fail(), at(20)).is_none());
        let down = t.observe_at(&fail(), at(30)).unwrap();
        assert_eq!(down.first_failure_at, Some(at(20)));
        // Up again, then a new streak starts its own clock.
        assert!(t.observe_at(&ok(), at(40)).unwrap().healthy);
        assert!(t.observe_at(&fail(), at(50)).is_none());
        let down = t.observe_at(&fail(), at(60)).unwrap();
        assert_eq!(down.first_failure_at, Some(at(50)));
    }

    #[test]
    fn tracker_treats_zero_rise_and_fall_as_one() {
        let mut t = Tracker::new(0, 0, true);
        let down = t.observe(&Err(Failure::Refused)).unwrap();
        assert_eq!(down.reason, "connection refused (1 consecutive failure)");
        let up = t.observe(&ok()).unwrap();
        assert_eq!(up.reason, "1 consecutive success");
    }

    #[test]
    fn failure_display_strings() {
        let cases = [
            (Failure::Refused, "connection refused"),
            (
                Failure::Timeout(Duration::from_millis(300)),
                "timeout after 300ms",
            ),
            (Failure::Tls("bad cert".into()), "TLS error: bad cert"),
            (Failure::HttpStatus(503), "HTTP status 503"),
            (
                Failure::BadResponse("junk".into()),
                "bad HTTP response: junk",
            ),
            (Failure::Io("reset".into()), "I/O error: reset"),
        ];
        for (failure, text) in cases {
            assert_eq!(failure.to_string(), text);
        }
    }

    // ---- the answer ----

    /// What [`http_status`] makes of an answer a fake server writes in `pieces`, then
    /// closing the connection.
    async fn status_of(pieces: &[&[u8]]) -> Result<u16, Failure> {
        let (client, server) = tokio::io::duplex(1 << 16);
        crate::net::http::answer_after_request(server, pieces.iter().map(|p| p.to_vec()).collect());
        tokio::time::timeout(
            Duration::from_secs(2),
            http_status(client, "/readyz", "192.0.2.1:6443"),
        )
        .await
        .expect("an answer or an error, never a hang")
    }

    #[tokio::test]
    async fn complete_answers_yield_the_code() {
        let cases: [(&[u8], u16); 4] = [
            (b"HTTP/1.1 200 OK\r\n\r\n", 200),
            (b"HTTP/1.1 503\r\n\r\n", 503),
            (b"HTTP/1.0 404 Not Found\n\n", 404),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 200),
        ];
        for (input, code) in cases {
            assert_eq!(status_of(&[input]).await, Ok(code), "{input:?}");
        }
    }

    #[tokio::test]
    async fn an_answer_split_across_reads_is_reassembled() {
        let pieces: [&[u8]; 5] = [
            b"HTT",
            b"P/1.1 5",
            b"03 Service Unavailable\r",
            b"\n",
            b"\r\n",
        ];
        assert_eq!(status_of(&pieces).await, Ok(503));
    }

    #[tokio::test]
    async fn malformed_answers_are_bad_responses() {
        let cases: [&[u8]; 7] = [
            b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
            b"\x15\x03\x03\x00\x02",
            b"HTTQ",
            b"HTTP/x.1 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1\r\n\r\n",
        ];
        for input in cases {
            let r = status_of(&[input]).await;
            assert!(
                matches!(&r, Err(Failure::BadResponse(m)) if !m.is_empty() && !m.contains('\n')),
                "{input:?} -> {r:?}"
            );
        }
    }

    #[tokio::test]
    async fn an_early_close_is_a_bad_response() {
        for input in [&b""[..], b"HTTP/1.1 20"] {
            let r = status_of(&[input]).await;
            assert!(
                matches!(&r, Err(Failure::BadResponse(m)) if m.contains("closed without")),
                "{input:?} -> {r:?}"
            );
        }
    }

    // ---- certificates and temp files ----

    /// A directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let dir =
                std::env::temp_dir().join(format!("xvip-health-{tag}-{}-{n}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, contents: &str) -> PathBuf {
            let path = self.0.join(name);
            std::fs::write(&path, contents).unwrap();
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
        pem: String,
    }

    fn new_ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A leaf certificate for `sans` signed by `ca`: (DER, key, cert PEM, key PEM).
    fn leaf(ca: &Ca, sans: &[&str]) -> (CertificateDer<'static>, KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let cert = CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca.issuer)
            .unwrap();
        let pem = cert.pem();
        (cert.der().clone(), key, pem)
    }

    fn private_key(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(key.serialize_der().into())
    }

    fn server_config(
        cert: CertificateDer<'static>,
        key: &KeyPair,
        client_ca: Option<&Ca>,
    ) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                let der = CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap();
                roots.add(der).unwrap();
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    roots.into(),
                    provider,
                )
                .build()
                .unwrap();
                builder.with_client_cert_verifier(verifier)
            }
        };
        Arc::new(
            builder
                .with_single_cert(vec![cert], private_key(key))
                .unwrap(),
        )
    }

    fn self_signed_server() -> Arc<ServerConfig> {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
        server_config(ck.cert.der().clone(), &ck.signing_key, None)
    }

    /// A TLS server on 127.0.0.1 answering every request with `status`; the
    /// request heads it received come out of the returned channel.
    async fn https_server(
        config: Arc<ServerConfig>,
        status: u16,
    ) -> (
        SocketAddrV4,
        JoinHandle<()>,
        mpsc::UnboundedReceiver<String>,
    ) {
        let (addr, task, rx) = https_server_on("127.0.0.1:0", config, status).await;
        (v4(addr), task, rx)
    }

    /// [`https_server`] on `bind` (IPv4 or IPv6).
    async fn https_server_on(
        bind: &str,
        config: Arc<ServerConfig>,
        status: u16,
    ) -> (SocketAddr, JoinHandle<()>, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
                        match tls.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                    let response = format!(
                        "HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\n\
                         Connection: close\r\n\r\n"
                    );
                    let _ = tls.write_all(response.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        (addr, task, rx)
    }

    /// A listener that accepts connections and holds them without ever answering.
    async fn silent_server() -> (SocketAddrV4, JoinHandle<()>, Arc<AtomicU32>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = v4(listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicU32::new(0));
        let count = Arc::clone(&accepted);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(tcp);
            }
        });
        (addr, task, accepted)
    }

    fn v4(addr: SocketAddr) -> SocketAddrV4 {
        match addr {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(a) => panic!("expected IPv4, got {a}"),
        }
    }

    fn https(tls: Arc<ClientConfig>, host: Option<&str>) -> HealthSettings {
        HealthSettings {
            kind: CheckKind::Https {
                path: "/readyz".into(),
                host: host.map(str::to_owned),
                tls,
            },
            interval: Duration::from_millis(20),
            timeout: Duration::from_millis(500),
            rise: 2,
            fall: 3,
        }
    }

    fn insecure() -> Arc<ClientConfig> {
        tls_config(None, None, None, false).unwrap()
    }

    // ---- tls_config ----

    fn config_error(ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>) -> TlsConfigError {
        tls_config(ca, cert, key, false).expect_err("config must be rejected")
    }

    #[test]
    fn tls_config_missing_ca_file_names_the_path() {
        let path = Path::new("/nonexistent/xvip/ca.crt");
        let err = config_error(Some(path), None, None);
        assert!(matches!(err, TlsConfigError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/xvip/ca.crt"),
            "{err}"
        );
    }

    #[test]
    fn tls_config_garbage_ca_file_names_the_path() {
        let dir = TempDir::new("garbage");
        let path = dir.write("ca.crt", "this is not a certificate\n");
        let err = config_error(Some(&path), None, None);
        assert!(
            matches!(err, TlsConfigError::NoCertificate { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");

        let broken = dir.write("broken.crt", "-----BEGIN CERTIFICATE-----\n!!!!\n");
        let err = config_error(Some(&broken), None, None);
        assert!(matches!(err, TlsConfigError::BadPem { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&*broken.to_string_lossy()),
            "{err}"
        );
    }

    #[test]
    fn tls_config_ignores_the_ca_file_when_insecure() {
        let path = Path::new("/nonexistent/xvip/ca.crt");
        assert!(tls_config(Some(path), None, None, true).is_ok());
    }

    #[test]
    fn tls_config_cert_without_key_names_the_cert() {
        let err = config_error(None, Some(Path::new("/etc/xvip/client.crt")), None);
        assert!(
            matches!(err, TlsConfigError::CertWithoutKey { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/etc/xvip/client.crt"), "{err}");

        let err = config_error(None, None, Some(Path::new("/etc/xvip/client.key")));
        assert!(
            matches!(err, TlsConfigError::KeyWithoutCert { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("/etc/xvip/client.key"), "{err}");
    }

    #[test]
    fn tls_config_rejects_key_files_without_a_matching_key() {
        let dir = TempDir::new("keys");
        let ca = new_ca("test CA");
        let (_, key, cert_pem) = leaf(&ca, &["client"]);
        let cert = dir.write("client.crt", &cert_pem);

        let no_key = dir.write("nokey.pem", &cert_pem);
        let err = config_error(None, Some(&cert), Some(&no_key));
        assert!(
            matches!(err, TlsConfigError::NoPrivateKey { .. }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(&*no_key.to_string_lossy()),
            "{err}"
        );

        let other = dir.write("other.key", &KeyPair::generate().unwrap().serialize_pem());
        let err = config_error(None, Some(&cert), Some(&other));
        assert!(matches!(err, TlsConfigError::ClientAuth { .. }), "{err:?}");

        let right = dir.write("client.key", &key.serialize_pem());
        assert!(tls_config(None, Some(&cert), Some(&right), false).is_ok());
    }

    // ---- checks against real servers ----

    #[tokio::test]
    async fn https_200_is_healthy_and_the_request_is_well_formed() {
        let (addr, server, mut heads) = https_server(self_signed_server(), 200).await;
        let r = check_once(addr, &https(insecure(), None)).await;
        assert!(r.is_ok(), "{r:?}");
        let head = heads.recv().await.unwrap();
        assert!(head.starts_with("GET /readyz HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
        assert!(head.contains("\r\nUser-Agent: xvip-health\r\n"), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        server.abort();
    }

    #[tokio::test]
    async fn https_503_is_http_status_failure() {
        let (addr, server, _heads) = https_server(self_signed_server(), 503).await;
        let r = check_once(addr, &https(insecure(), None)).await;
        assert_eq!(r, Err(Failure::HttpStatus(503)));
        server.abort();
    }

    #[tokio::test]
    async fn nothing_listening_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = v4(listener.local_addr().unwrap());
        drop(listener);
        assert_eq!(
            check_once(addr, &https(insecure(), None)).await,
            Err(Failure::Refused)
        );
        let mut tcp = https(insecure(), None);
        tcp.kind = CheckKind::Tcp;
        assert_eq!(check_once(addr, &tcp).await, Err(Failure::Refused));
    }

    #[tokio::test]
    async fn silent_server_times_out_within_the_timeout() {
        let (addr, server, _) = silent_server().await;
        let mut settings = https(insecure(), None);
        settings.timeout = Duration::from_millis(100);
        let start = Instant::now();
        let r = check_once(addr, &settings).await;
        let took = start.elapsed();
        assert_eq!(r, Err(Failure::Timeout(Duration::from_millis(100))));
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_millis(250), "{took:?}");
        server.abort();
    }

    #[tokio::test]
    async fn tcp_check_against_a_listener_is_ok() {
        let (addr, server, accepted) = silent_server().await;
        let mut settings = https(insecure(), None);
        settings.kind = CheckKind::Tcp;
        assert!(check_once(addr, &settings).await.is_ok());
        server.abort();
        // The connection succeeded at the kernel level; the accept count is not
        // asserted because the accept loop may not have run yet.
        let _ = accepted;
    }

    #[tokio::test]
    async fn none_check_is_healthy_without_traffic() {
        let mut settings = https(insecure(), None);
        settings.kind = CheckKind::None;
        // TEST-NET-1: any traffic would hang until the timeout instead.
        let addr = SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 6443);
        assert_eq!(check_once(addr, &settings).await, Ok(Duration::ZERO));
    }

    #[tokio::test]
    async fn ca_verification_accepts_the_right_ca_and_rejects_others() {
        let dir = TempDir::new("ca");
        let ca = new_ca("cluster CA");
        let (cert, key, _) = leaf(&ca, &["127.0.0.1", "kube-apiserver"]);
        let (addr, server, _heads) = https_server(server_config(cert, &key, None), 200).await;

        let right = dir.write("ca.crt", &ca.pem);
        let verified = tls_config(Some(&right), None, None, false).unwrap();
        let r = check_once(addr, &https(Arc::clone(&verified), None)).await;
        assert!(r.is_ok(), "right CA, IP name: {r:?}");
        let r = check_once(addr, &https(Arc::clone(&verified), Some("kube-apiserver"))).await;
        assert!(r.is_ok(), "right CA, DNS name: {r:?}");
        let r = check_once(addr, &https(verified, Some("wrong.example"))).await;
        assert!(
            matches!(r, Err(Failure::Tls(_))),
            "right CA, wrong name: {r:?}"
        );

        let wrong = dir.write("other.crt", &new_ca("other CA").pem);
        let r = check_once(
            addr,
            &https(tls_config(Some(&wrong), None, None, false).unwrap(), None),
        )
        .await;
        assert!(matches!(r, Err(Failure::Tls(_))), "wrong CA: {r:?}");
        let skip = tls_config(Some(&wrong), None, None, true).unwrap();
        assert!(
            check_once(addr, &https(skip, None)).await.is_ok(),
            "insecure"
        );
        server.abort();
    }

    #[tokio::test]
    async fn ipv6_backends_are_checked_with_the_address_as_ip_san_and_a_bracketed_host() {
        let dir = TempDir::new("ca6");
        let ca = new_ca("cluster CA");
        let right = dir.write("ca.crt", &ca.pem);
        let verified = tls_config(Some(&right), None, None, false).unwrap();
        let (cert, key, _) = leaf(&ca, &["::1"]);
        let (addr, server, mut heads) =
            https_server_on("[::1]:0", server_config(cert, &key, None), 200).await;
        assert!(addr.is_ipv6());
        let r = check_once(addr, &https(Arc::clone(&verified), None)).await;
        assert!(r.is_ok(), "IPv6 IP SAN: {r:?}");
        let head = heads.recv().await.unwrap();
        assert!(
            head.contains(&format!("Host: [::1]:{}\r\n", addr.port())),
            "{head}"
        );
        server.abort();
        // A certificate for another address (here IPv4 loopback) is refused.
        let (cert, key, _) = leaf(&ca, &["127.0.0.1"]);
        let (addr, server, _heads) =
            https_server_on("[::1]:0", server_config(cert, &key, None), 200).await;
        let r = check_once(addr, &https(verified, None)).await;
        assert!(matches!(r, Err(Failure::Tls(_))), "wrong SAN: {r:?}");
        server.abort();
    }

    #[tokio::test]
    async fn client_certificate_is_presented_when_configured() {
        let dir = TempDir::new("mtls");
        let ca = new_ca("cluster CA");
        let (cert, key, _) = leaf(&ca, &["127.0.0.1"]);
        let config = server_config(cert, &key, Some(&ca));
        let (addr, server, _heads) = https_server(config, 200).await;

        let (_, client_key, client_pem) = leaf(&ca, &["xvip-health"]);
        let cert_path = dir.write("client.crt", &client_pem);
        let key_path = dir.write("client.key", &client_key.serialize_pem());
        let with_cert = tls_config(None, Some(&cert_path), Some(&key_path), false).unwrap();
        let r = check_once(addr, &https(with_cert, None)).await;
        assert!(r.is_ok(), "with client cert: {r:?}");

        let r = check_once(addr, &https(insecure(), None)).await;
        assert!(
            matches!(r, Err(Failure::Tls(_))),
            "without client cert: {r:?}"
        );
        server.abort();
    }

    // ---- spawn_checker ----

    async fn next_event(rx: &mut mpsc::Receiver<HealthEvent>) -> HealthEvent {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("no health event within 5 s")
            .expect("checker ended")
    }

    #[tokio::test]
    async fn checker_reports_down_within_fall_intervals_after_the_server_stops() {
        let (addr, server, _heads) = https_server(self_signed_server(), 200).await;
        let mut settings = https(insecure(), None);
        settings.timeout = Duration::from_millis(100);
        let settings = Arc::new(settings);
        let (tx, mut rx) = mpsc::channel(16);
        let checker = spawn_checker(addr, Arc::clone(&settings), true, tx);

        for _ in 0..2 {
            let e = next_event(&mut rx).await;
            assert_eq!(e.backend, SocketAddr::V4(addr));
            assert!(e.result.is_ok(), "{:?}", e.result);
            assert!(e.transition.is_none());
        }
        server.abort();
        let _ = server.await; // the listener is closed once the task is gone
        let stopped = Instant::now();
        let down = loop {
            let e = next_event(&mut rx).await;
            if let Some(t) = e.transition {
                break (e.at, t);
            }
        };
        let (at, transition) = down;
        assert!(!transition.healthy);
        assert!(
            transition.reason.contains("3 consecutive failures"),
            "{}",
            transition.reason
        );
        let first = transition
            .first_failure_at
            .expect("down transition has a streak start");
        assert!(first <= at);
        let bound =
            settings.interval * settings.fall + settings.timeout + Duration::from_millis(150);
        assert!(
            at - stopped <= bound,
            "detected after {:?}, bound {bound:?}",
            at - stopped
        );
        checker.abort();
    }

    #[tokio::test]
    async fn checker_brings_an_initially_unhealthy_backend_up_after_rise() {
        let (addr, server, _heads) = https_server(self_signed_server(), 200).await;
        let (tx, mut rx) = mpsc::channel(16);
        let checker = spawn_checker(addr, Arc::new(https(insecure(), None)), false, tx);
        assert!(next_event(&mut rx).await.transition.is_none());
        let up = next_event(&mut rx)
            .await
            .transition
            .expect("second success brings it up");
        assert!(up.healthy);
        checker.abort();
        server.abort();
    }

    #[tokio::test]
    async fn checker_never_runs_two_checks_of_one_backend_at_once() {
        let (addr, server, accepted) = silent_server().await;
        let mut settings = https(insecure(), None);
        settings.interval = Duration::from_millis(10);
        settings.timeout = Duration::from_millis(60);
        let (tx, mut rx) = mpsc::channel(16);
        let checker = spawn_checker(addr, Arc::new(settings), true, tx);
        let mut last = None;
        for _ in 0..3 {
            let e = next_event(&mut rx).await;
            assert!(
                matches!(e.result, Err(Failure::Timeout(_))),
                "{:?}",
                e.result
            );
            if let Some(prev) = last {
                let gap: Duration = e.at - prev;
                assert!(
                    gap >= Duration::from_millis(55),
                    "checks overlapped: gap {gap:?}"
                );
            }
            last = Some(e.at);
        }
        checker.abort();
        // With overlapping checks every 10 ms there would be ~18 connections by now.
        assert!(
            accepted.load(Ordering::SeqCst) <= 4,
            "{} connections",
            accepted.load(Ordering::SeqCst)
        );
        server.abort();
    }

    #[tokio::test]
    async fn checker_stops_when_the_receiver_is_closed() {
        let mut settings = https(insecure(), None);
        settings.kind = CheckKind::None;
        let (tx, rx) = mpsc::channel(1);
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1);
        let checker = spawn_checker(addr, Arc::new(settings), true, tx);
        drop(rx);
        tokio::time::timeout(Duration::from_secs(2), checker)
            .await
            .expect("checker did not stop")
            .unwrap();
    }
}

/// Bounded fuzzing of the answer's reading (hyper's parser, and our classification of its
/// errors): whatever a backend (or anything listening on its port) answers.
#[cfg(test)]
mod fuzz_tests {
    use super::*;
    use crate::fuzz::Rng;

    #[tokio::test]
    async fn random_mutated_and_truncated_answers_give_a_code_or_a_clean_error() {
        let valid = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
        let interesting: &[&[u8]] = &[b"HTTP/", b"\r\n", b"\n", b" ", b"999", b"1.1", b"\xff"];
        let mut rng = Rng::new(0x4ea1);
        let (mut codes, mut errors) = (0, 0);
        for case in 0..2_000 {
            let buf = match case % 4 {
                0 => rng.bytes(64),
                1 => {
                    let mut b = valid.to_vec();
                    b.truncate(rng.below(valid.len() + 1));
                    b
                }
                _ => rng.mutate(valid, interesting),
            };
            let (client, server) = tokio::io::duplex(1 << 16);
            crate::net::http::answer_after_request(server, vec![buf]);
            let r = tokio::time::timeout(
                Duration::from_secs(2),
                http_status(client, "/readyz", "192.0.2.1:6443"),
            )
            .await
            .unwrap_or_else(|_| panic!("case {case}: hung"));
            match r {
                Ok(code) => {
                    codes += 1;
                    assert!((100..=599).contains(&code), "case {case}: {code}");
                }
                Err(Failure::BadResponse(why) | Failure::Io(why)) => {
                    errors += 1;
                    assert!(
                        !why.is_empty() && !why.contains('\n'),
                        "case {case}: {why:?}"
                    );
                }
                Err(other) => panic!("case {case}: unexpected {other:?}"),
            }
        }
        assert!(codes > 50 && errors > 50, "{codes} codes, {errors} errors");
    }
}
