//! Master discovery (`--discover-from-kubeconfig`): the `kubernetes` EndpointSlices of the
//! `default` namespace list the API servers that hold a lease; xvip lists, then watches
//! them and replaces its backend set with the ready ones, so masters that join or leave
//! are followed within a round trip.
//!
//! A list, then a watch from its `resourceVersion` (`allowWatchBookmarks`), over HTTPS
//! through hyper ([`crate::net::http`]) with k8s-openapi's types, instead of kube-rs: one list
//! and one watch do not need kube-rs' client stack (tower, ~120 crates, +80 s of a clean
//! build on two cores, measured). A watch the server ends is resumed from the last version
//! seen (bookmarks keep it fresh); 410 Gone (the version left the server's cache) lists
//! again; a failed list or watch is retried after a backoff from [`BACKOFF_MIN`] to
//! [`BACKOFF_MAX`].
//! The kubeconfig's credentials are honoured: the cluster CA (file or data), a client
//! certificate (file or data) or a bearer token (inline or file), or
//! `insecure-skip-tls-verify`.
//!
//! Where it asks: the backends xvip currently considers healthy, each at its own address,
//! then the kubeconfig's `server`. The server is usually the VIP itself, which the node
//! holding the VIP cannot reach through its own XDP program; asking the masters directly
//! has no such loop. Certificates are verified against the backend's IP (kubeadm puts each
//! master's advertise address in its serving certificate), or the `tls-server-name`.
//!
//! When no API server answers, the last set stays: it is newer than the static `--backend`
//! list, health checks still take dead masters out, and falling back would remove backends
//! (dropping their tracked connections) exactly when the control plane is in trouble. The
//! static list is only the set used until the first successful poll. An answer with no
//! ready address is ignored the same way: it never empties the table.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::discovery::v1::EndpointSlice, apimachinery::pkg::apis::meta::v1::WatchEvent,
};
use serde::{Deserialize, Serialize};
use tokio::{sync::mpsc, task::JoinHandle};

pub mod client;
pub mod kubeconfig;
pub mod watch;

use self::{
    client::{Listed, list_once, ready_masters_of},
    kubeconfig::{ApiAccess, load_kubeconfig, warn_insecure},
    watch::{Watch, WatchEnd},
};

/// Master discovery (absent without `--discover-from-kubeconfig`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct DiscoveryStatus {
    pub kubeconfig: String,
    /// Ready API servers of the last answer.
    pub masters: Vec<String>,
    /// Seconds since the last answer, when there was one.
    pub last_success_age_s: Option<f64>,
    /// Why the last poll failed, while polls fail.
    pub last_error: Option<String>,
    pub polls_ok: u64,
    pub polls_failed: u64,
}

/// How often the kubeconfig is looked for until it loads (and the interval discovery
/// polled at before it watched).
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// First wait after a failed list or watch; it doubles with each failure in a row.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// Longest wait between two attempts while the API is unreachable.
pub const BACKOFF_MAX: Duration = Duration::from_secs(4);
/// The server ends a watch after this long (`timeoutSeconds`); it is resumed at once.
pub const WATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// A watch silent for this long (no event, no bookmark) is taken for dead.
pub const WATCH_IDLE: Duration = Duration::from_secs(90);
/// Bound on one request to one API server (connect, TLS, answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// The list call: EndpointSlices of the `kubernetes` service.
pub const PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes";
/// Largest answer read (a three-master list is about 1 KiB).
const MAX_RESPONSE: usize = 4 << 20;

/// Why discovery could not get a list.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The kubeconfig could not be read or used.
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    /// One API server did not give a usable answer.
    #[error("{server}: {reason}")]
    Request { server: String, reason: String },
    /// Nobody answered.
    #[error("no API server answered: {0}")]
    NoAnswer(String),
    /// The cluster names no CA and does not say `insecure-skip-tls-verify: true`: its
    /// credentials would go to whoever answers.
    #[error("kubeconfig {path}: {}", no_ca(cluster))]
    NoCa { path: String, cluster: String },
}

/// What is wrong with a kubeconfig whose `cluster` has no CA, and the two ways out.
pub fn no_ca(cluster: &str) -> String {
    format!(
        "cluster {cluster:?} has no certificate-authority or certificate-authority-data, so the API servers cannot be verified; add the cluster CA, or set insecure-skip-tls-verify: true to accept any server (credentials are then sent unverified)"
    )
}

/// Who to ask first: the daemon's currently healthy backends.
pub type Candidates = Arc<dyn Fn() -> Vec<SocketAddr> + Send + Sync>;

/// What discovery has seen so far, for `xvip status` and the metrics.
#[derive(Debug, Default)]
pub struct Report {
    pub masters: BTreeSet<SocketAddr>,
    pub last_success: Option<Instant>,
    pub last_error: Option<String>,
    pub polls_ok: u64,
    pub polls_failed: u64,
}

/// The report, shared between the discovery task and the status endpoint.
pub type SharedReport = Arc<Mutex<Report>>;

impl Report {
    /// The status document's view of it.
    pub fn status(&self, kubeconfig: &Path) -> DiscoveryStatus {
        DiscoveryStatus {
            kubeconfig: kubeconfig.display().to_string(),
            masters: self.masters.iter().map(|a| a.to_string()).collect(),
            last_success_age_s: self.last_success.map(|t| t.elapsed().as_secs_f64()),
            last_error: self.last_error.clone(),
            polls_ok: self.polls_ok,
            polls_failed: self.polls_failed,
        }
    }

    fn failed(&mut self, why: &str) {
        self.polls_failed += 1;
        self.last_error = Some(why.to_string());
    }
}

/// The discovery task: lists, then watches, and sends every non-empty set of ready
/// masters (on every change, and again on every bookmark: a SIGHUP may have put the static
/// list back meanwhile). The kubeconfig is looked for every [`POLL_INTERVAL`] until it
/// loads (it appears with `kubeadm init`), and re-read after every failure (credentials
/// may have been rotated). Problems are logged once per change.
pub fn spawn(
    kubeconfig: PathBuf,
    candidates: Candidates,
    report: SharedReport,
    tx: mpsc::Sender<BTreeSet<SocketAddr>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut d = Discovery {
            report,
            tx,
            last_seen: None,
            last_problem: None,
        };
        let mut access: Option<ApiAccess> = None;
        let mut backoff = BACKOFF_MIN;
        let mut warned = false;
        loop {
            if access.is_none() {
                match load_kubeconfig(&kubeconfig) {
                    Ok(a) => {
                        if a.insecure && !std::mem::replace(&mut warned, true) {
                            warn_insecure(&kubeconfig, &a);
                        }
                        access = Some(a)
                    }
                    Err(e) => {
                        d.failed(&e.to_string());
                        tokio::time::sleep(POLL_INTERVAL).await;
                        continue;
                    }
                }
            }
            let Some(a) = &access else { continue };
            let ended = match list_once(a, &candidates()).await {
                Ok(listed) => {
                    backoff = BACKOFF_MIN;
                    match d.follow(a, listed).await {
                        Some(end) => end,
                        None => return,
                    }
                }
                Err(e) => WatchEnd::Failed(e.to_string()),
            };
            // A watch the server ended (its timeout) or expired (410) lists again; not at
            // once, so a server that ends every watch at once cannot make this spin.
            let wait = match ended {
                WatchEnd::Closed | WatchEnd::Expired => BACKOFF_MIN,
                WatchEnd::Failed(why) => {
                    d.failed(&why);
                    access = None;
                    let w = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    w
                }
            };
            tokio::time::sleep(wait).await;
        }
    })
}

/// The discovery task's state between lists.
struct Discovery {
    report: SharedReport,
    tx: mpsc::Sender<BTreeSet<SocketAddr>>,
    last_seen: Option<BTreeSet<SocketAddr>>,
    last_problem: Option<String>,
}

impl Discovery {
    fn note(&self, f: impl FnOnce(&mut Report)) {
        if let Ok(mut r) = self.report.lock() {
            f(&mut r);
        }
    }

    fn failed(&mut self, why: &str) {
        self.note(|r| r.failed(why));
        log_once(
            &mut self.last_problem,
            format!("discovery: {why}; keeping the current backends"),
        );
    }

    /// Applies one answer (a list, an event or a bookmark). `None`: the daemon is gone.
    async fn answer(&mut self, slices: &BTreeMap<String, EndpointSlice>) -> Option<()> {
        let set = ready_masters_of(slices.values());
        if set.is_empty() {
            self.failed("no ready API server listed");
            return Some(());
        }
        self.note(|r| {
            r.polls_ok += 1;
            r.last_success = Some(Instant::now());
            r.last_error = None;
            r.masters = set.clone();
        });
        if self.last_problem.take().is_some() {
            log::info!("discovery: the API answers again");
        }
        if self.last_seen.as_ref() != Some(&set) {
            log::info!("discovery: API servers {set:?}");
            self.last_seen = Some(set.clone());
        }
        self.tx.send(set).await.ok()
    }

    /// Follows a list with a watch from its version until it ends. `None`: the daemon is
    /// gone.
    async fn follow(&mut self, access: &ApiAccess, listed: Listed) -> Option<WatchEnd> {
        let mut version = listed
            .list
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let mut slices: BTreeMap<String, EndpointSlice> = listed
            .list
            .items
            .into_iter()
            .map(|s| (s.metadata.name.clone().unwrap_or_default(), s))
            .collect();
        self.answer(&slices).await?;
        let mut watch = match Watch::open(access, listed.addr, &listed.name, &version).await {
            Ok(w) => w,
            Err(end) => return Some(end),
        };
        loop {
            let event = match watch.next().await {
                Ok(ev) => ev,
                Err(end) => return Some(end),
            };
            match event {
                WatchEvent::Added(s) | WatchEvent::Modified(s) => {
                    version = s.metadata.resource_version.clone().unwrap_or(version);
                    slices.insert(s.metadata.name.clone().unwrap_or_default(), s);
                }
                WatchEvent::Deleted(s) => {
                    version = s.metadata.resource_version.clone().unwrap_or(version);
                    slices.remove(&s.metadata.name.clone().unwrap_or_default());
                }
                WatchEvent::Bookmark {
                    resource_version, ..
                } => version = resource_version,
                WatchEvent::ErrorStatus(_) | WatchEvent::ErrorOther(_) => {}
            }
            self.answer(&slices).await?;
        }
    }
}

fn log_once(last: &mut Option<String>, problem: String) {
    if last.as_deref() != Some(problem.as_str()) {
        log::warn!("{problem}");
        *last = Some(problem);
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddrV4;

    use base64::Engine as _;
    use k8s_openapi::List;

    use super::*;
    use crate::control::discovery::client::{poll_once, ready_masters};
    use rustls::{
        RootCertStore,
        pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const SLICES: &str = r#"{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","metadata":{"resourceVersion":"1"},
      "items":[{"metadata":{"name":"kubernetes","namespace":"default","labels":{"kubernetes.io/service-name":"kubernetes"}},
        "addressType":"IPv4",
        "endpoints":[{"addresses":["10.0.0.11"],"conditions":{"ready":true}},
                     {"addresses":["10.0.0.12"]},
                     {"addresses":["10.0.0.13"],"conditions":{"ready":false}}],
        "ports":[{"name":"https","port":6443,"protocol":"TCP"}]},
       {"metadata":{"name":"v6"},"addressType":"IPv6","endpoints":[{"addresses":["2001:db8::11","192.0.2.99"]}],"ports":[{"name":"https","port":6443}]}]}"#;

    struct Ca {
        issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
        pem: String,
    }

    fn new_ca() -> Ca {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `sans` signed by `ca`: (cert PEM, key PEM).
    fn leaf(ca: &Ca, sans: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let sans = sans.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cert = rcgen::CertificateParams::new(sans)
            .unwrap()
            .signed_by(&key, &ca.issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// An API server on 127.0.0.1 that requires a client certificate from `ca` and answers
    /// every request with [`SLICES`], chunked, as Go's server does for larger bodies.
    async fn api_server(ca: &Ca) -> SocketAddrV4 {
        use rustls::server::{ServerConfig, WebPkiClientVerifier};
        let (cert, key) = leaf(ca, &["127.0.0.1"]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap())
            .unwrap();
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .unwrap();
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let SocketAddr::V4(addr) = listener.local_addr().unwrap() else {
            unreachable!()
        };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if tls.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    assert!(String::from_utf8_lossy(&head).starts_with(&format!("GET {PATH} ")));
                    let (a, b) = SLICES.split_at(100);
                    let body = format!("{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n", a.len(), b.len());
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                    );
                    let _ = tls.write_all(resp.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        addr
    }

    fn write_kubeconfig(dir: &Path, ca: &str, cert: &str, key: &str) -> PathBuf {
        let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let path = dir.join("admin.conf");
        std::fs::write(
            &path,
            format!(
                "clusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n    certificate-authority-data: {}\n\
                 users:\n- name: u\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n\
                 contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
                b(ca),
                b(cert),
                b(key)
            ),
        )
        .unwrap();
        path
    }

    #[tokio::test]
    async fn a_master_is_asked_directly_with_the_cluster_ca_and_a_client_certificate() {
        let ca = new_ca();
        let addr = api_server(&ca).await;
        let dir = std::env::temp_dir().join(format!("xvip-kc-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = leaf(&ca, &["admin"]);
        let access = load_kubeconfig(&write_kubeconfig(&dir, &ca.pem, &cert, &key)).unwrap();
        // The kubeconfig's server (port 1) refuses; the healthy backend answers.
        let got = poll_once(&access, &[SocketAddr::V4(addr)]).await.unwrap();
        let got: Vec<String> = got.iter().map(|a| a.to_string()).collect();
        // The IPv6 slice's address too (an IPv6-only cluster's masters); an address of the
        // other family in a slice is not taken.
        assert_eq!(
            got,
            ["10.0.0.11:6443", "10.0.0.12:6443", "[2001:db8::11]:6443"]
        );

        // Another CA: the server's certificate is refused, and the error says so.
        let other = new_ca();
        let (cert, key) = leaf(&other, &["admin"]);
        let access = load_kubeconfig(&write_kubeconfig(&dir, &other.pem, &cert, &key)).unwrap();
        let err = poll_once(&access, &[SocketAddr::V4(addr)])
            .await
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(err.contains(&format!("{addr}: TLS")), "{err}");
    }

    #[test]
    fn the_report_shows_in_the_status_table_and_the_metrics() {
        let mut r = Report {
            masters: ["10.0.0.11:6443".parse().unwrap()].into(),
            last_success: Some(Instant::now()),
            polls_ok: 3,
            ..Default::default()
        };
        r.failed("HTTP 403 Forbidden");
        let st = crate::api::document::Status {
            discovery: Some(r.status(Path::new("/etc/kubernetes/admin.conf"))),
            ..Default::default()
        };
        let table = st.to_table();
        assert!(
            table.contains("discovery from /etc/kubernetes/admin.conf: masters 10.0.0.11:6443"),
            "{table}"
        );
        assert!(
            table.contains("polls ok 3 failed 1, last error: HTTP 403 Forbidden"),
            "{table}"
        );
        let prom = st.to_prometheus();
        assert!(
            prom.contains("xvip_discovery_polls_total{result=\"failed\"} 1"),
            "{prom}"
        );
        assert!(prom.contains("xvip_discovery_masters 1"), "{prom}");
        assert!(
            prom.contains("xvip_discovery_last_success_age_seconds 0.0"),
            "{prom}"
        );
    }

    #[test]
    fn ready_addresses_at_the_https_port_are_the_masters() {
        let list: List<EndpointSlice> = serde_json::from_str(SLICES).unwrap();
        let got: Vec<String> = ready_masters(&list).iter().map(|a| a.to_string()).collect();
        // The IPv6 slice's address too (an IPv6-only cluster's masters); an address of the
        // other family in a slice is not taken.
        assert_eq!(
            got,
            ["10.0.0.11:6443", "10.0.0.12:6443", "[2001:db8::11]:6443"]
        );
    }
}
