//! `lab-apiserver`: a tiny fake Kubernetes API server for the xvip lab, the demo and
//! the integration tests.
//!
//! It answers the handful of endpoints that health checks, `kubectl version` and load
//! tests touch, and labels every answer with its name (body of `/whoami`, header
//! `X-Lab-Server`) so a test can tell which backend the VIP picked.
//!
//! ```text
//! lab-apiserver --listen IP:PORT --name NAME [--not-ready-file PATH] [--plain]
//!               [--endpointslices-file PATH] [--gone-file PATH]
//! ```
//!
//! With `--endpointslices-file`, `GET /apis/discovery.k8s.io/v1/namespaces/default/endpointslices`
//! (the label selector is not evaluated) answers the file's content as JSON, read anew on
//! every request so a test can change it, with a `resourceVersion` made of the file's mtime
//! and length; 503 while the file is missing. With `watch=1` it streams watch events like a
//! real API server: the file is looked at every 50 ms and each change is a `MODIFIED` event
//! per EndpointSlice (at once when the version asked for is not the file's), a `BOOKMARK`
//! every second, and the stream ends when the file is removed. While `--gone-file` exists a
//! watch is refused with 410 Gone (an `ERROR` event on a running stream), as a real server
//! answers a resource version too old for its cache: the client must list again.
//!
//! With `--services` it keeps Services in memory (`services`): `GET /api/v1/services`
//! lists them with a resourceVersion, `watch=1` streams `ADDED`/`MODIFIED`/`DELETED` from
//! a version (bookmarks every second); `POST /api/v1/namespaces/NS/services` creates,
//! `PUT .../services/NAME` replaces the spec and metadata, `DELETE` deletes, `GET` reads
//! one; `PUT .../services/NAME/status` replaces the status only when the body's
//! `metadata.resourceVersion` is the current one (409 Conflict otherwise, as the real
//! server's optimistic concurrency); `POST .../events` keeps an event. `GET /lab/services`
//! says how many status writes and conflicts there were and the events, for the tests.
//!
//! Once listening it prints `lab-apiserver NAME listening on IP:PORT (https|http)`, so
//! a parent process can wait for that line instead of polling the port.

use std::error::Error;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use tokio::io::BufReader;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "A tiny fake Kubernetes API server for the xvip lab")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the banner shows the real one).
    #[arg(long, value_name = "IP:PORT")]
    listen: SocketAddr,
    /// Name reported by /whoami, /watch and the X-Lab-Server header.
    #[arg(long)]
    name: String,
    /// While this file exists, /readyz answers 503, like a draining API server.
    #[arg(long, value_name = "PATH")]
    not_ready_file: Option<PathBuf>,
    /// Serve plain HTTP instead of HTTPS (for wrk and other plain-HTTP load tools).
    #[arg(long)]
    plain: bool,
    /// JSON EndpointSliceList served for the `kubernetes` EndpointSlices (re-read per request).
    #[arg(long, value_name = "PATH")]
    endpointslices_file: Option<PathBuf>,
    /// While this file exists, EndpointSlice watches are answered 410 Gone.
    #[arg(long, value_name = "PATH")]
    gone_file: Option<PathBuf>,
    /// kube-proxy's configuration (YAML, kubeadm's `config.conf`), served as the
    /// `kube-system/kube-proxy` ConfigMap (re-read per request; 404 without it).
    #[arg(long, value_name = "PATH")]
    kube_proxy_config: Option<PathBuf>,
    /// A further subjectAltName (IP or DNS) of the certificate; repeat for several.
    #[arg(long = "san", value_name = "NAME")]
    sans: Vec<String>,
    /// The certificate ends this many days from now (rcgen's default, year 4096, otherwise).
    #[arg(long, value_name = "DAYS")]
    valid_days: Option<u32>,
    /// Sign the certificate with this CA key (PEM) instead of self-signing it; the CA's
    /// certificate is `tests::lab::ca` of the same key and `--ca-name`.
    #[arg(long, value_name = "PATH", requires = "ca_name")]
    ca_key: Option<PathBuf>,
    /// The CA's common name (with --ca-key).
    #[arg(long, value_name = "NAME", requires = "ca_key")]
    ca_name: Option<String>,
    /// Keep Services in memory: list, watch, create, replace, delete, the `status`
    /// subresource with its resourceVersion precondition, events (see `services`).
    #[arg(long)]
    services: bool,
}

/// How often a watch looks at the EndpointSlices file.
const WATCH_POLL: Duration = Duration::from_millis(50);
/// Watch polls between two bookmarks (one a second).
const BOOKMARK_EVERY: u32 = 20;
const SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";

/// Longest request or header line accepted; real clients stay far below.
const MAX_LINE: u64 = 8192;
/// Guards against a client that streams headers forever.
const MAX_HEADERS: usize = 100;
/// A client that connects but never finishes the handshake must not pin a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const TEXT: &str = "text/plain; charset=utf-8";
/// kube-proxy's ConfigMap, as kubeadm creates it.
const KUBE_PROXY_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kube-proxy";
const JSON: &str = "application/json";

/// Shared, read-only state of the server.
struct Server {
    name: String,
    /// The bound address, advertised by `/api` like a real API server does.
    listen: SocketAddr,
    not_ready_file: Option<PathBuf>,
    endpointslices_file: Option<PathBuf>,
    gone_file: Option<PathBuf>,
    kube_proxy_config: Option<PathBuf>,
    /// `--services`: the Service store.
    services: Option<services::Store>,
}

/// The parts of a request the routes look at.
struct Request {
    method: String,
    /// Path without the query string (kubectl sends `/version?timeout=32s`).
    path: String,
    /// The query string, without `?`.
    query: String,
    keep_alive: bool,
    /// The body, at most [`MAX_BODY`] bytes.
    body: Vec<u8>,
}

/// Largest request body kept.
const MAX_BODY: u64 = 1 << 20;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lab-apiserver: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn Error>> {
    // The name goes into a header line verbatim; CR/LF or spaces would corrupt it.
    if args.name.is_empty() || !args.name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!(
            "invalid --name {:?}: use printable ASCII, no spaces",
            args.name
        )
        .into());
    }
    let acceptor = match args.plain {
        true => None,
        false => Some(tls_acceptor(&args)?),
    };
    let listener =
        bind(args.listen).map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let server = Arc::new(Server {
        name: args.name,
        listen: listener.local_addr()?,
        not_ready_file: args.not_ready_file,
        endpointslices_file: args.endpointslices_file,
        gone_file: args.gone_file,
        kube_proxy_config: args.kube_proxy_config,
        services: args.services.then(services::Store::default),
    });
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    println!(
        "lab-apiserver {} listening on {} ({scheme})",
        server.name, server.listen
    );
    // stdout is a pipe when a parent waits for this line, so do not leave it buffered.
    io::stdout().flush()?;

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        let tcp = tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    // Usually EMFILE under a load test: back off instead of spinning.
                    eprintln!("lab-apiserver: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (server, acceptor) = (Arc::clone(&server), acceptor.clone());
        tokio::spawn(async move {
            // Errors only mean the client went away; there is nobody to tell.
            let _ = match acceptor {
                None => server.serve(tcp).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => server.serve(tls).await,
                        _ => Ok(()),
                    }
                }
            };
        });
    }
}

/// Binds with a deep backlog (load tests open thousands of connections at once) and
/// SO_REUSEADDR (the lab restarts servers on the same port right away).
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// A fresh certificate for the listen IP, "localhost" and `--san`s, ending `--valid-days`
/// from now if given, self-signed or signed by `--ca-key`: clients of the lab skip
/// verification, just as xvip's health checks do without a CA file.
fn tls_acceptor(args: &Args) -> Result<TlsAcceptor, Box<dyn Error>> {
    let mut names = vec![args.listen.ip().to_string(), "localhost".into()];
    names.extend(args.sans.iter().cloned());
    let valid_days = args.valid_days;
    let mut params = rcgen::CertificateParams::new(names)?;
    if let Some(days) = valid_days {
        let today = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
            / 86_400;
        let (y, m, d) = civil_from_days(today as i64 + i64::from(days));
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(y, m, d);
    }
    let signing_key = rcgen::KeyPair::generate()?;
    let cert = match (&args.ca_key, &args.ca_name) {
        (Some(key), Some(name)) => {
            let ca_key = rcgen::KeyPair::from_pem(&std::fs::read_to_string(key)?)?;
            let issuer = rcgen::Issuer::new(tests::lab::ca_params(name)?, ca_key);
            params.signed_by(&signing_key, &issuer)?
        }
        _ => params.self_signed(&signing_key)?,
    };
    let certified = rcgen::CertifiedKey { cert, signing_key };
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(vec![certified.cert.der().clone()], key)?;
    // Only HTTP/1.1 is spoken; saying so stops Go clients (kubectl) from trying h2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y as i32, m as u8, d as u8)
}

impl Server {
    /// Serves requests on one connection until the client closes it or asks to.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) -> io::Result<()> {
        let mut stream = BufReader::new(stream);
        loop {
            let request = match read_request(&mut stream).await {
                Ok(Some(request)) => request,
                Ok(None) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    let body = "bad request\n".to_owned();
                    return self.respond(&mut stream, 400, TEXT, body, false).await;
                }
                Err(e) => return Err(e),
            };
            if request.method == "GET" && request.path == "/watch" {
                // A stream owns the connection until the client leaves.
                return self.watch(stream).await;
            }
            if request.method == "GET"
                && request.path == SLICES_PATH
                && self.endpointslices_file.is_some()
                && query_param(&request.query, "watch").is_some_and(|v| v == "1" || v == "true")
            {
                if self.gone_file.as_ref().is_some_and(|f| f.exists()) {
                    return self
                        .respond(&mut stream, 410, JSON, gone_status(), false)
                        .await;
                }
                let from = query_param(&request.query, "resourceVersion").unwrap_or_default();
                return self.watch_slices(stream, from.to_string()).await;
            }
            // The Service store answers the API's paths, except the kube-proxy ConfigMap
            // (`route`, for the doctor's check).
            if (request.path.starts_with("/api/v1/") && request.path != KUBE_PROXY_PATH)
                || request.path.starts_with("/lab/")
                || (self.services.is_some()
                    && self.endpointslices_file.is_none()
                    && request.path.starts_with("/apis/discovery.k8s.io/v1/"))
            {
                let Some(store) = &self.services else {
                    let body = "404 page not found\n".to_owned();
                    self.respond(&mut stream, 404, TEXT, body, request.keep_alive)
                        .await?;
                    continue;
                };
                if request.method == "GET"
                    && let Some(res) = services::list_resource(&request.path)
                    && query_param(&request.query, "watch").is_some_and(|v| v == "1" || v == "true")
                {
                    let from = query_param(&request.query, "resourceVersion").unwrap_or_default();
                    let from = from.parse().unwrap_or(0);
                    return store.watch(stream, &self.name, res, from).await;
                }
                let (status, body) = store.route(&request.method, &request.path, &request.body);
                self.respond(&mut stream, status, JSON, body, request.keep_alive)
                    .await?;
                if !request.keep_alive {
                    return Ok(());
                }
                continue;
            }
            let (status, content_type, body) = self.route(&request).await;
            self.respond(&mut stream, status, content_type, body, request.keep_alive)
                .await?;
            if !request.keep_alive {
                return Ok(());
            }
        }
    }

    async fn route(&self, request: &Request) -> (u16, &'static str, String) {
        if request.method != "GET" {
            return (404, TEXT, "404 page not found\n".into());
        }
        match request.path.as_str() {
            "/readyz" => match &self.not_ready_file {
                Some(file) if tokio::fs::try_exists(file).await.unwrap_or(false) => {
                    (503, TEXT, "not ready".into())
                }
                _ => (200, TEXT, "ok".into()),
            },
            "/healthz" | "/livez" => (200, TEXT, "ok".into()),
            KUBE_PROXY_PATH => match self
                .kube_proxy_config
                .as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
            {
                Some(conf) => (
                    200,
                    JSON,
                    serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": "kube-proxy", "namespace": "kube-system"},
                        "data": {"config.conf": conf},
                    })
                    .to_string(),
                ),
                None => (404, TEXT, "404 page not found\n".into()),
            },
            "/" | "/whoami" => (200, TEXT, format!("{}\n", self.name)),
            "/version" => (200, JSON, version_json()),
            SLICES_PATH => match &self.endpointslices_file {
                Some(file) => match read_slices(file) {
                    Some((rv, mut list)) => {
                        list["metadata"]["resourceVersion"] = rv.into();
                        (200, JSON, list.to_string())
                    }
                    None => (503, TEXT, "no endpointslices file\n".into()),
                },
                None => (404, TEXT, "404 page not found\n".into()),
            },
            "/api" => (
                200,
                JSON,
                format!(
                    concat!(
                        r#"{{"kind":"APIVersions","versions":["v1"],"#,
                        r#""serverAddressByClientCIDRs":[{{"clientCIDR":"0.0.0.0/0","#,
                        r#""serverAddress":"{}"}}]}}"#
                    ),
                    self.listen
                ),
            ),
            "/apis" => (
                200,
                JSON,
                r#"{"kind":"APIGroupList","apiVersion":"v1","groups":[]}"#.into(),
            ),
            _ => (404, TEXT, "404 page not found\n".into()),
        }
    }

    async fn respond<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        status: u16,
        content_type: &str,
        body: String,
        keep_alive: bool,
    ) -> io::Result<()> {
        let reason = match status {
            200 => "OK",
            201 => "Created",
            400 => "Bad Request",
            404 => "Not Found",
            409 => "Conflict",
            410 => "Gone",
            _ => "Service Unavailable",
        };
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             X-Lab-Server: {}\r\nConnection: {connection}\r\n\r\n",
            body.len(),
            self.name
        );
        response.push_str(&body);
        // One write, so that head and body share a TLS record and a TCP segment.
        out.write_all(response.as_bytes()).await?;
        out.flush().await
    }

    /// `GET /watch`: a chunked line every 100 ms until the client goes away, standing in
    /// for the long-lived watch connections that must survive backend changes.
    async fn watch<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) -> io::Result<()> {
        let (mut rd, mut wr) = tokio::io::split(stream);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {TEXT}\r\nTransfer-Encoding: chunked\r\n\
             X-Lab-Server: {}\r\n\r\n",
            self.name
        );
        wr.write_all(head.as_bytes()).await?;
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        let mut scratch = [0u8; 512];
        for n in 0u64.. {
            tokio::select! {
                _ = ticker.tick() => {
                    let line = format!("{} tick {n}\n", self.name);
                    wr.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes()).await?;
                    wr.flush().await?;
                }
                // Reading notices the client's FIN at once; writes alone would only fail
                // after the peer's RST, or never if the path is black-holed.
                read = rd.read(&mut scratch) => if read? == 0 { return Ok(()) },
            }
        }
        Ok(())
    }
}

impl Server {
    /// A watch of the EndpointSlices from resource version `from` (see the module docs).
    async fn watch_slices<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        from: String,
    ) -> io::Result<()> {
        let Some(file) = &self.endpointslices_file else {
            return Ok(());
        };
        let (mut rd, mut wr) = tokio::io::split(stream);
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {JSON}\r\nTransfer-Encoding: chunked\r\n\
             X-Lab-Server: {}\r\n\r\n",
            self.name
        );
        wr.write_all(head.as_bytes()).await?;
        wr.flush().await?;
        let mut sent = from;
        let mut ticker = tokio::time::interval(WATCH_POLL);
        let mut scratch = [0u8; 512];
        for n in 0u32.. {
            tokio::select! {
                _ = ticker.tick() => {}
                read = rd.read(&mut scratch) => if read? == 0 { return Ok(()) } else { continue },
            }
            if self.gone_file.as_ref().is_some_and(|f| f.exists()) {
                let event = format!(r#"{{"type":"ERROR","object":{}}}"#, gone_status());
                chunk(&mut wr, &event).await?;
                break;
            }
            let Some(version) = slices_version(file) else {
                break;
            };
            if version != sent {
                // A file being rewritten may not parse yet: try again at the next poll.
                if let Some((rv, list)) = read_slices(file) {
                    for item in list["items"].as_array().into_iter().flatten() {
                        let mut item = item.clone();
                        item["metadata"]["resourceVersion"] = rv.clone().into();
                        let event = serde_json::json!({"type": "MODIFIED", "object": item});
                        chunk(&mut wr, &event.to_string()).await?;
                    }
                    sent = rv;
                }
            } else if n % BOOKMARK_EVERY == BOOKMARK_EVERY - 1 {
                let event = serde_json::json!({"type": "BOOKMARK", "object": {
                    "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                    "metadata": {"resourceVersion": sent}}});
                chunk(&mut wr, &event.to_string()).await?;
            }
        }
        wr.write_all(b"0\r\n\r\n").await?;
        wr.flush().await
    }
}

/// The in-memory Services (and EndpointSlices) of `--services`.
mod services {
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::Mutex;
    use std::time::Duration;

    use serde_json::{Value, json};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// The Service list and watch path.
    pub const LIST: &str = "/api/v1/services";
    /// The EndpointSlice list and watch path (every namespace).
    pub const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";
    /// Events kept (the oldest go first).
    const MAX_EVENTS: usize = 1000;
    /// Watch events kept for watches that resume.
    const MAX_LOG: usize = 10_000;

    /// (resource, namespace, name).
    type Key = (&'static str, String, String);

    #[derive(Default)]
    struct State {
        version: u64,
        objects: BTreeMap<Key, Value>,
        /// (version, resource, type, object) of every change, oldest first.
        log: Vec<(u64, &'static str, &'static str, Value)>,
        status_writes: u64,
        conflicts: u64,
        events: Vec<Value>,
    }

    /// The store and a signal for watches.
    pub struct Store {
        state: Mutex<State>,
        changed: tokio::sync::watch::Sender<u64>,
    }

    impl Default for Store {
        fn default() -> Self {
            Self {
                state: Mutex::new(State {
                    version: 100,
                    ..Default::default()
                }),
                changed: tokio::sync::watch::channel(100).0,
            }
        }
    }

    fn status(code: u16, reason: &str, message: &str) -> (u16, String) {
        (
            code,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": message, "reason": reason, "code": code})
            .to_string(),
        )
    }

    /// A resource's kind and apiVersion.
    fn type_of(resource: &str) -> (&'static str, &'static str) {
        match resource {
            "services" => ("Service", "v1"),
            _ => ("EndpointSlice", "discovery.k8s.io/v1"),
        }
    }

    /// The resource a list path names.
    pub fn list_resource(path: &str) -> Option<&'static str> {
        match path {
            LIST => Some("services"),
            SLICES => Some("endpointslices"),
            _ => None,
        }
    }

    impl State {
        fn commit(&mut self, kind: &'static str, key: Key, mut obj: Value) -> Value {
            self.version += 1;
            obj["metadata"]["resourceVersion"] = self.version.to_string().into();
            let res = key.0;
            if kind == "DELETED" {
                self.objects.remove(&key);
            } else {
                self.objects.insert(key, obj.clone());
            }
            self.log.push((self.version, res, kind, obj.clone()));
            if self.log.len() > MAX_LOG {
                self.log.remove(0);
            }
            obj
        }
    }

    impl Store {
        /// Everything but the watch.
        pub fn route(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
            let r = self.route_locked(method, path, body);
            let v = self.state.lock().expect("poisoned").version;
            self.changed.send_replace(v);
            r
        }

        fn route_locked(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
            let mut st = self.state.lock().expect("poisoned");
            if path == "/lab/services" {
                return (
                    200,
                    json!({"status_writes": st.status_writes, "conflicts": st.conflicts,
                           "events": st.events})
                    .to_string(),
                );
            }
            if let Some(res) = list_resource(path)
                && method == "GET"
            {
                let items: Vec<&Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == res)
                    .map(|(_, v)| v)
                    .collect();
                let (kind, api) = type_of(res);
                return (
                    200,
                    json!({"kind": format!("{kind}List"), "apiVersion": api,
                           "metadata": {"resourceVersion": st.version.to_string()}, "items": items})
                    .to_string(),
                );
            }
            let rest = path
                .strip_prefix("/api/v1/namespaces/")
                .or_else(|| path.strip_prefix("/apis/discovery.k8s.io/v1/namespaces/"))
                .unwrap_or_default();
            let parts: Vec<&str> = rest.split('/').collect();
            let body: Option<Value> = serde_json::from_slice(body).ok();
            let res = |r: &str| match r {
                "services" => Some("services"),
                "endpointslices" => Some("endpointslices"),
                _ => None,
            };
            match (method, parts.as_slice()) {
                ("POST", [ns, "events"]) => {
                    let Some(mut ev) = body else {
                        return status(400, "BadRequest", "no JSON");
                    };
                    ev["metadata"]["namespace"] = (*ns).into();
                    st.events.push(ev.clone());
                    if st.events.len() > MAX_EVENTS {
                        st.events.remove(0);
                    }
                    (201, ev.to_string())
                }
                ("POST", [ns, r]) if res(r).is_some() => {
                    let Some(mut obj) = body else {
                        return status(400, "BadRequest", "no JSON");
                    };
                    let name = obj["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let key = (res(r).unwrap_or_default(), ns.to_string(), name.clone());
                    if name.is_empty() {
                        return status(400, "BadRequest", "no name");
                    }
                    if st.objects.contains_key(&key) {
                        return status(
                            409,
                            "AlreadyExists",
                            &format!("{r} {name:?} already exists"),
                        );
                    }
                    obj["metadata"]["namespace"] = (*ns).into();
                    obj["metadata"]["uid"] = format!("uid-{ns}-{name}-{}", st.version).into();
                    if obj["metadata"]["creationTimestamp"].is_null() {
                        obj["metadata"]["creationTimestamp"] = format!(
                            "2026-01-01T00:{:02}:{:02}Z",
                            (st.version / 60) % 60,
                            st.version % 60
                        )
                        .into();
                    }
                    if key.0 == "services" {
                        obj["status"] = json!({"loadBalancer": {}});
                    }
                    (201, st.commit("ADDED", key, obj).to_string())
                }
                (m, [ns, r, name]) | (m, [ns, r, name, "status"]) if res(r).is_some() => {
                    let key = (res(r).unwrap_or_default(), ns.to_string(), name.to_string());
                    let Some(cur) = st.objects.get(&key).cloned() else {
                        return status(404, "NotFound", &format!("{r} {name:?} not found"));
                    };
                    let sub = parts.len() == 4;
                    match (m, sub) {
                        ("GET", _) => (200, cur.to_string()),
                        ("DELETE", false) => (200, st.commit("DELETED", key, cur).to_string()),
                        ("PUT", _) => {
                            let Some(new) = body else {
                                return status(400, "BadRequest", "no JSON");
                            };
                            let rv = new["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap_or_default();
                            if !rv.is_empty() && rv != cur["metadata"]["resourceVersion"] {
                                if sub {
                                    st.conflicts += 1;
                                }
                                return status(
                                    409,
                                    "Conflict",
                                    &format!(
                                        "Operation cannot be fulfilled on {r} {name:?}: the object has been modified; please apply your changes to the latest version and try again"
                                    ),
                                );
                            }
                            let mut obj = cur.clone();
                            if sub {
                                obj["status"] = new["status"].clone();
                                st.status_writes += 1;
                            } else if key.0 == "services" {
                                obj["spec"] = new["spec"].clone();
                                obj["metadata"]["annotations"] =
                                    new["metadata"]["annotations"].clone();
                            } else {
                                obj["endpoints"] = new["endpoints"].clone();
                                obj["ports"] = new["ports"].clone();
                            }
                            (200, st.commit("MODIFIED", key, obj).to_string())
                        }
                        _ => status(405, "MethodNotAllowed", m),
                    }
                }
                _ => status(404, "NotFound", path),
            }
        }

        /// A watch of `resource` from version `from`: the changes after it, then each
        /// change as it comes, a bookmark every second, until the client leaves.
        pub async fn watch<S: AsyncRead + AsyncWrite + Unpin>(
            &self,
            stream: S,
            name: &str,
            resource: &'static str,
            from: u64,
        ) -> io::Result<()> {
            let (mut rd, mut wr) = tokio::io::split(stream);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\
                 X-Lab-Server: {name}\r\n\r\n"
            );
            wr.write_all(head.as_bytes()).await?;
            wr.flush().await?;
            let mut sent = from;
            let mut rx = self.changed.subscribe();
            let mut scratch = [0u8; 512];
            loop {
                let pending: Vec<(u64, &'static str, Value)> = {
                    let st = self.state.lock().expect("poisoned");
                    st.log
                        .iter()
                        .filter(|(v, r, _, _)| *v > sent && *r == resource)
                        .map(|(v, _, k, o)| (*v, *k, o.clone()))
                        .collect()
                };
                for (v, kind, obj) in pending {
                    super::chunk(&mut wr, &json!({"type": kind, "object": obj}).to_string())
                        .await?;
                    sent = v;
                }
                tokio::select! {
                    r = rx.changed() => if r.is_err() { return Ok(()) },
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {
                        // The last version of this resource sent: nothing after it is skipped.
                        let (kind, api) = type_of(resource);
                        let ev = json!({"type": "BOOKMARK", "object": {"kind": kind,
                            "apiVersion": api, "metadata": {"resourceVersion": sent.to_string()}}});
                        super::chunk(&mut wr, &ev.to_string()).await?;
                    }
                    read = rd.read(&mut scratch) => if read? == 0 { return Ok(()) },
                }
            }
        }
    }
}

/// One watch event as one chunk, a line of JSON.
async fn chunk<W: AsyncWrite + Unpin>(wr: &mut W, event: &str) -> io::Result<()> {
    let line = format!("{event}\n");
    wr.write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
        .await?;
    wr.flush().await
}

/// The EndpointSlices file's resource version: its mtime and length.
fn slices_version(file: &std::path::Path) -> Option<String> {
    let m = std::fs::metadata(file).ok()?;
    let t = m
        .modified()
        .ok()?
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?;
    Some(format!(
        "{}{:09}-{}",
        t.as_secs(),
        t.subsec_nanos(),
        m.len()
    ))
}

/// The file's version and its list, when it exists and parses.
fn read_slices(file: &std::path::Path) -> Option<(String, serde_json::Value)> {
    let version = slices_version(file)?;
    let list = serde_json::from_slice(&std::fs::read(file).ok()?).ok()?;
    // Changed while read: the caller tries again.
    (slices_version(file)? == version).then_some((version, list))
}

/// A 410 Status as the API server sends it for a resource version older than its cache.
fn gone_status() -> String {
    r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"too old resource version","reason":"Expired","code":410}"#.into()
}

/// The value of `name` in a query string (not percent-decoded).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| {
        kv.split_once('=')
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v)
    })
}

/// The `/version` answer, in the shape `kubectl version` decodes.
fn version_json() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    format!(
        concat!(
            r#"{{"major":"1","minor":"31","gitVersion":"v1.31.0-xvip-lab","#,
            r#""gitCommit":"0000000000000000000000000000000000000000","gitTreeState":"clean","#,
            r#""buildDate":"2024-08-13T00:00:00Z","goVersion":"go1.22.5","compiler":"gc","#,
            r#""platform":"linux/{arch}"}}"#
        ),
        arch = arch
    )
}

/// Reads one request head and skips its body. `Ok(None)`: the client closed cleanly
/// between requests. Malformed requests are `InvalidData` errors.
async fn read_request<R: AsyncBufRead + Unpin>(r: &mut R) -> io::Result<Option<Request>> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_owned());
    let mut line = Vec::new();
    // Empty lines before a request are allowed (RFC 9112 section 2.2).
    loop {
        line.clear();
        if read_line(r, &mut line).await? == 0 {
            return Ok(None);
        }
        if !line.trim_ascii().is_empty() {
            break;
        }
    }
    let start = String::from_utf8_lossy(line.trim_ascii()).into_owned();
    let mut parts = start.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("malformed request line"));
    };
    let mut keep_alive = version == "HTTP/1.1";
    let mut content_length = 0u64;
    for count in 0.. {
        line.clear();
        if read_line(r, &mut line).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let header = line.trim_ascii();
        if header.is_empty() {
            break;
        }
        if count == MAX_HEADERS {
            return Err(bad("too many headers"));
        }
        let header = String::from_utf8_lossy(header);
        let Some((name, value)) = header.split_once(':') else {
            return Err(bad("malformed header"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = value.parse().map_err(|_| bad("bad Content-Length"))?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(bad(
                "request bodies with Transfer-Encoding are not supported",
            ));
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    keep_alive = true;
                }
            }
        }
    }
    // The Service routes read the body (bounded); the rest must be consumed to find the
    // next request.
    let mut body = Vec::new();
    (&mut *r)
        .take(content_length.min(MAX_BODY))
        .read_to_end(&mut body)
        .await?;
    tokio::io::copy(
        &mut (&mut *r).take(content_length.saturating_sub(MAX_BODY)),
        &mut tokio::io::sink(),
    )
    .await?;
    Ok(Some(Request {
        method: method.to_owned(),
        path: target.split('?').next().unwrap_or_default().to_owned(),
        query: target
            .split_once('?')
            .map(|(_, q)| q)
            .unwrap_or_default()
            .to_owned(),
        keep_alive,
        body,
    }))
}

/// Reads up to and including `\n`, refusing lines longer than [`MAX_LINE`].
async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<usize> {
    let n = (&mut *r).take(MAX_LINE).read_until(b'\n', buf).await?;
    if n as u64 == MAX_LINE && !buf.ends_with(b"\n") {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
    }
    Ok(n)
}
