//! Checks of each configured master: `/readyz` answered (the health checker's own one-shot
//! check, with the configured CA and client certificate); its next hop from the kernel as
//! the daemon asks for it (out of an attached interface, its MAC resolved); and its serving
//! certificate, read over a TLS handshake made with the health check's client settings: it
//! must name every VIP (clients reach the API server through it) and must not be within 30
//! days of expiry; all masters' certificates must come from one issuer. With a
//! controlPlaneEndpoint (`--control-plane-endpoint`, or kubeadm's from the `kubeadm-config`
//! ConfigMap with a kubeconfig), each certificate must name it too.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Finding;
use crate::config::Settings;
use crate::control::health::{self, CheckKind, HealthSettings};
use crate::control::nexthop::{self, Hop, NextHopError};
use crate::net::iface::{Interface, format_mac};

/// A serving certificate closer than this to its end is a warning.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);
/// Bound on reading a master's certificate.
pub const CERT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the doctor reads of a serving certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CertFacts {
    /// IP address SANs.
    pub ips: Vec<IpAddr>,
    /// DNS name SANs.
    pub dns: Vec<String>,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// End of validity, as printed.
    pub not_after_text: String,
    /// The issuer's name, with its key identifier when the certificate carries one.
    pub issuer: String,
}

impl CertFacts {
    /// Every SAN as printed: the addresses, then the names.
    pub fn sans(&self) -> Vec<String> {
        let ips = self.ips.iter().map(ToString::to_string);
        ips.chain(self.dns.iter().cloned()).collect()
    }
}

/// Every master check, master by master.
pub async fn checks(s: &Settings, health: &HealthSettings) -> Vec<Finding> {
    let masters = super::master_addrs(s);
    let vips = super::vips(s);
    // The health check's client settings without verification: the certificate is read
    // even when the configured CA would refuse it (the readyz line says so).
    let reader = crate::net::tls::tls_config(
        None,
        s.health.cert_file.as_deref(),
        s.health.key_file.as_deref(),
        true,
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let attached: Vec<(u32, String)> = s
        .interfaces
        .iter()
        .filter_map(|n| Interface::lookup(n).ok())
        .map(|i| (i.index, i.name))
        .collect();
    let kernel = nexthop::Kernel::open();
    let mut out = Vec::new();
    let endpoint = match control_plane_endpoint(s).await {
        Ok(e) => e,
        Err(e) => {
            out.push(Finding::warn(
                "master-cert",
                format!(
                    "cannot read the controlPlaneEndpoint from kube-system/kubeadm-config: {e}"
                ),
                "give it with --control-plane-endpoint",
            ));
            None
        }
    };
    let mut issuers = Vec::new();
    for m in masters {
        out.push(readyz(m, health, health::check_once(m, health).await));
        // After the check's connection, as the daemon's round would find it.
        let hop = match &kernel {
            Ok(k) => k.next_hop(m.ip()),
            Err(e) => Err(e.clone()),
        };
        out.push(route(m, hop, &attached, ifname));
        let facts = match &reader {
            Ok(tls) => read_certificate(m, Arc::clone(tls)).await,
            Err(e) => Err(e.to_string()),
        };
        if let Ok(f) = &facts {
            issuers.push((m, f.issuer.clone()));
            if let Some(e) = &endpoint {
                out.push(names_endpoint(m, e, f));
            }
        }
        out.push(certificate(m, &vips, facts, now));
    }
    out.extend(one_issuer(&issuers));
    out
}

/// Where kubeadm keeps its `ClusterConfiguration`.
pub const KUBEADM_CONFIG_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kubeadm-config";

/// The part of kubeadm's `ClusterConfiguration` read here.
#[derive(Debug, Default, serde::Deserialize)]
struct ClusterConfiguration {
    #[serde(default, rename = "controlPlaneEndpoint")]
    control_plane_endpoint: String,
}

/// The controlPlaneEndpoint's host: the setting, else kubeadm's through the kubeconfig
/// (`None`: neither is there, or kubeadm's is empty).
async fn control_plane_endpoint(s: &Settings) -> Result<Option<String>, String> {
    if let Some(e) = &s.control_plane_endpoint {
        return Ok(Some(e.clone()));
    }
    let Some(path) = &s.discover_from_kubeconfig else {
        return Ok(None);
    };
    let Some(body) = super::kube_proxy::configmap(s, path, KUBEADM_CONFIG_PATH).await? else {
        return Ok(None);
    };
    endpoint_of(&body)
}

/// The controlPlaneEndpoint's host in a `kubeadm-config` ConfigMap answer.
///
/// # Errors
/// What does not parse, in one line.
pub fn endpoint_of(body: &[u8]) -> Result<Option<String>, String> {
    let c: ClusterConfiguration = super::kube_proxy::configmap_yaml(body, "ClusterConfiguration")?;
    if c.control_plane_endpoint.is_empty() {
        return Ok(None);
    }
    crate::config::resolve::control_plane_host(&c.control_plane_endpoint)
        .map(Some)
        .ok_or_else(|| {
            format!(
                "controlPlaneEndpoint {:?} is no host[:port]",
                c.control_plane_endpoint
            )
        })
}

/// Whether the certificate names `endpoint` (an address among its IP SANs, a name among its
/// DNS SANs, a `*.` SAN covering its first label).
pub fn names_endpoint(master: SocketAddr, endpoint: &str, facts: &CertFacts) -> Finding {
    const CHECK: &str = "master-cert";
    let named = match endpoint.parse::<IpAddr>() {
        Ok(ip) => facts.ips.contains(&ip),
        Err(_) => facts.dns.iter().any(|d| {
            let d = d.to_ascii_lowercase();
            d == endpoint
                || d.strip_prefix("*.").is_some_and(|rest| {
                    endpoint
                        .split_once('.')
                        .is_some_and(|(_, tail)| tail == rest)
                })
        }),
    };
    if named {
        return Finding::ok(
            CHECK,
            format!("{master}: certificate names the controlPlaneEndpoint {endpoint}"),
        );
    }
    let sans = facts.sans();
    Finding::fail(
        CHECK,
        format!(
            "{master}: certificate does not name the controlPlaneEndpoint {endpoint} (SANs: {}): clients of {endpoint} (kubeconfigs, kubelets) get \"x509: certificate is valid for ..., not {endpoint}\"",
            sans.join(", ")
        ),
        format!(
            "add {endpoint} to kubeadm's apiServer.certSANs, then regenerate the certificate: move /etc/kubernetes/pki/apiserver.{{crt,key}} away and run `kubeadm init phase certs apiserver --config FILE`"
        ),
    )
}

/// The name of interface `index` (its number when it has none).
fn ifname(index: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into `buf`.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("ifindex {index}");
    }
    // SAFETY: on success `buf` holds a NUL-terminated name.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// The master's next hop as the daemon needs it: out of an attached interface (`attached`:
/// index and name), with a MAC; the daemon leaves a master without either out of the table.
pub fn route(
    master: SocketAddr,
    hop: Result<Hop, NextHopError>,
    attached: &[(u32, String)],
    ifname: impl Fn(u32) -> String,
) -> Finding {
    const CHECK: &str = "master-route";
    let h = match hop {
        Ok(Hop::Local) => {
            return Finding::ok(
                CHECK,
                format!("{master}: this node (its flows go up the local stack)"),
            );
        }
        Ok(Hop::Remote(h)) => h,
        Err(e) => {
            return Finding::fail(
                CHECK,
                format!("{master}: {e}"),
                "add a route to the master out of an --interface",
            );
        }
    };
    let Some((_, name)) = attached.iter().find(|(i, _)| *i == h.ifindex) else {
        let out = ifname(h.ifindex);
        return Finding::fail(
            CHECK,
            format!(
                "{master}: routed out of {out}, not an --interface: the daemon leaves it out of the table"
            ),
            format!("add --interface {out}, or route the master out of an attached interface"),
        );
    };
    let via = if h.via_gateway {
        format!(" via {}", h.neighbour)
    } else {
        String::new()
    };
    match h.mac {
        Some(mac) => Finding::ok(
            CHECK,
            format!("{master}: on {name}{via}, MAC {}", format_mac(&mac)),
        ),
        None => Finding::fail(
            CHECK,
            format!(
                "{master}: on {name}{via}, {} not resolved (neighbour state {}): the daemon leaves it out of the table until it is",
                h.neighbour, h.state
            ),
            format!(
                "check that {} is up and on {name}'s segment (`ip neigh show dev {name}`)",
                h.neighbour
            ),
        ),
    }
}

/// Every master's certificate from one issuer: clients trust one cluster CA.
pub fn one_issuer(issuers: &[(SocketAddr, String)]) -> Option<Finding> {
    const CHECK: &str = "master-ca";
    let mut by: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (m, i) in issuers {
        by.entry(i.as_str()).or_default().push(m.to_string());
    }
    match by.len() {
        0 => None,
        1 => Some(Finding::ok(
            CHECK,
            format!(
                "every master's certificate is issued by {}",
                by.keys().next().expect("one")
            ),
        )),
        _ => Some(Finding::warn(
            CHECK,
            format!(
                "the masters' certificates come from different issuers: {}",
                by.iter()
                    .map(|(i, ms)| format!("{i} ({})", ms.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            "sign every API server's certificate with the cluster CA (kubeadm: the same /etc/kubernetes/pki/ca.{crt,key} on every master, e.g. `kubeadm join --control-plane` with --certificate-key)",
        )),
    }
}

/// One `/readyz` (or TCP) check's result as a finding.
pub fn readyz(master: SocketAddr, settings: &HealthSettings, r: health::CheckResult) -> Finding {
    const CHECK: &str = "master-readyz";
    let what = match &settings.kind {
        CheckKind::Https { path, .. } => format!("GET {path}"),
        CheckKind::Tcp => "TCP connect".into(),
        CheckKind::None => {
            return Finding::ok(CHECK, format!("{master}: not checked (--health none)"));
        }
    };
    match r {
        Ok(took) => Finding::ok(CHECK, format!("{master}: {what} answered in {took:.1?}")),
        Err(e) => {
            let fix = match &e {
                health::Failure::Tls(_) => {
                    "check --ca-file (the cluster CA, /etc/kubernetes/pki/ca.crt) and --cert-file/--key-file, or that the certificate names the master's address"
                }
                health::Failure::HttpStatus(401 | 403) => {
                    "allow anonymous /readyz (the default) or give --cert-file/--key-file"
                }
                _ => "start or repair this API server, or remove it from --backend",
            };
            Finding::fail(CHECK, format!("{master}: {what}: {e}"), fix)
        }
    }
}

/// Reads the leaf certificate `master` serves.
async fn read_certificate(
    master: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> Result<CertFacts, String> {
    let handshake = async {
        let tcp = TcpStream::connect(master)
            .await
            .map_err(|e| e.to_string())?;
        let stream = TlsConnector::from(tls)
            .connect(ServerName::IpAddress(master.ip().into()), tcp)
            .await
            .map_err(|e| format!("TLS handshake: {e}"))?;
        stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .ok_or_else(|| "no certificate presented".to_string())
    };
    let der = tokio::time::timeout(CERT_TIMEOUT, handshake)
        .await
        .map_err(|_| format!("no TLS handshake within {CERT_TIMEOUT:?}"))??;
    parse_certificate(&der)
}

/// The SANs and end of validity of a DER certificate.
///
/// # Errors
/// Not a certificate, or a broken SAN extension.
pub fn parse_certificate(der: &[u8]) -> Result<CertFacts, String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) =
        x509_parser::parse_x509_certificate(der).map_err(|e| format!("bad certificate: {e}"))?;
    use x509_parser::extensions::ParsedExtension;
    let key_id = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| {
                k.0.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }),
            _ => None,
        });
    let mut facts = CertFacts {
        not_after: cert.validity().not_after.timestamp(),
        not_after_text: cert.validity().not_after.to_string(),
        issuer: match key_id {
            Some(k) => format!("\"{}\" (key {k})", cert.issuer()),
            None => format!("\"{}\"", cert.issuer()),
        },
        ..CertFacts::default()
    };
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("bad subjectAltName: {e}"))?;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(d) => facts.dns.push((*d).to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => facts
                    .ips
                    .push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4"))),
                16 => facts
                    .ips
                    .push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16"))),
                _ => {}
            },
            _ => {}
        }
    }
    Ok(facts)
}

/// The certificate's verdict: every VIP named, not expired nor within 30 days of it.
pub fn certificate(
    master: SocketAddr,
    vips: &[IpAddr],
    facts: Result<CertFacts, String>,
    now: i64,
) -> Finding {
    const CHECK: &str = "master-cert";
    let facts = match facts {
        Ok(f) => f,
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("{master}: cannot read its certificate: {e}"),
                "make the API server reachable over TLS from this node",
            );
        }
    };
    let missing: Vec<String> = vips
        .iter()
        .filter(|v| !facts.ips.contains(v))
        .map(ToString::to_string)
        .collect();
    if !missing.is_empty() {
        let sans = facts.sans();
        return Finding::fail(
            CHECK,
            format!(
                "{master}: certificate does not name {} (SANs: {}): clients through the VIP get \"x509: certificate is valid for ..., not {}\"",
                missing.join(", "),
                sans.join(", "),
                missing[0]
            ),
            "add the VIP to kubeadm's apiServer.certSANs (or make it the controlPlaneEndpoint), then regenerate the certificate: move /etc/kubernetes/pki/apiserver.{crt,key} away and run `kubeadm init phase certs apiserver --config FILE`",
        );
    }
    let left = facts.not_after - now;
    let days = left.div_euclid(24 * 3600);
    if left <= 0 {
        return Finding::fail(
            CHECK,
            format!("{master}: certificate expired on {}", facts.not_after_text),
            "`kubeadm certs renew apiserver`, then restart the API server",
        );
    }
    if left < EXPIRY_WARNING.as_secs() as i64 {
        return Finding::warn(
            CHECK,
            format!(
                "{master}: certificate expires on {} (in {days} days)",
                facts.not_after_text
            ),
            "`kubeadm certs renew apiserver`, then restart the API server",
        );
    }
    Finding::ok(
        CHECK,
        format!("{master}: certificate names the VIP, expires in {days} days"),
    )
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    const DAY: i64 = 24 * 3600;

    fn master() -> SocketAddr {
        "192.0.2.11:6443".parse().unwrap()
    }

    fn vip() -> Vec<IpAddr> {
        vec!["192.0.2.100".parse().unwrap()]
    }

    fn facts(ips: &[&str], not_after: i64) -> CertFacts {
        CertFacts {
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            dns: vec!["kubernetes".into()],
            not_after,
            not_after_text: "Jan  1 00:00:00 2027 +00:00".into(),
            issuer: "\"CN=kubernetes\"".into(),
        }
    }

    #[test]
    fn a_certificate_without_the_vip_fails_listing_its_sans() {
        let f = certificate(master(), &vip(), Ok(facts(&["192.0.2.11"], 400 * DAY)), 0);
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.seen.starts_with(
                "192.0.2.11:6443: certificate does not name 192.0.2.100 (SANs: 192.0.2.11, kubernetes)"
            ),
            "{}",
            f.seen
        );
        assert!(f.fix.contains("certSANs"), "{}", f.fix);
    }

    #[test]
    fn the_control_plane_endpoint_must_be_named_by_name_wildcard_or_address() {
        let mut f = facts(&["192.0.2.11"], 400 * DAY);
        f.dns.push("*.K8s.example".into());
        let bad = names_endpoint(master(), "cp.example", &f);
        assert_eq!(
            bad.line(),
            "fail master-cert: 192.0.2.11:6443: certificate does not name the controlPlaneEndpoint cp.example (SANs: 192.0.2.11, kubernetes, *.K8s.example): clients of cp.example (kubeconfigs, kubelets) get \"x509: certificate is valid for ..., not cp.example\"; fix: add cp.example to kubeadm's apiServer.certSANs, then regenerate the certificate: move /etc/kubernetes/pki/apiserver.{crt,key} away and run `kubeadm init phase certs apiserver --config FILE`"
        );
        assert_eq!(
            names_endpoint(master(), "cp.k8s.example", &f).level,
            Level::Ok
        );
        assert_eq!(
            names_endpoint(master(), "a.b.k8s.example", &f).level,
            Level::Fail
        );
        assert_eq!(names_endpoint(master(), "kubernetes", &f).level, Level::Ok);
        assert_eq!(names_endpoint(master(), "192.0.2.11", &f).level, Level::Ok);
        assert_eq!(
            names_endpoint(master(), "192.0.2.12", &f).level,
            Level::Fail
        );
    }

    #[test]
    fn kubeadms_endpoint_is_read_from_its_configmap() {
        let cm = |conf: &str| {
            serde_json::json!({"kind": "ConfigMap", "data": {"ClusterConfiguration": conf}})
                .to_string()
                .into_bytes()
        };
        assert_eq!(
            endpoint_of(&cm(
                "kind: ClusterConfiguration\ncontrolPlaneEndpoint: \"CP.example:6443\"\n"
            )),
            Ok(Some("cp.example".into()))
        );
        assert_eq!(endpoint_of(&cm("kind: ClusterConfiguration\n")), Ok(None));
        assert!(endpoint_of(&cm("controlPlaneEndpoint: \"a b\"\n")).is_err());
        assert_eq!(
            endpoint_of(b"{\"data\": {}}"),
            Err("the ConfigMap has no ClusterConfiguration".into())
        );
    }

    #[test]
    fn expiry_within_30_days_warns_and_past_it_fails() {
        let ips = ["192.0.2.11", "192.0.2.100"];
        let ok = certificate(master(), &vip(), Ok(facts(&ips, 400 * DAY)), 0);
        assert_eq!(
            ok.line(),
            "ok   master-cert: 192.0.2.11:6443: certificate names the VIP, expires in 400 days"
        );
        let soon = certificate(master(), &vip(), Ok(facts(&ips, 10 * DAY + 5)), 0);
        assert_eq!(soon.level, Level::Warn);
        assert!(soon.seen.ends_with("(in 10 days)"), "{}", soon.seen);
        let gone = certificate(master(), &vip(), Ok(facts(&ips, 10)), 20);
        assert_eq!(gone.level, Level::Fail);
        assert!(gone.seen.contains("expired on"), "{}", gone.seen);
        let unread = certificate(master(), &vip(), Err("refused".into()), 0);
        assert_eq!(unread.level, Level::Warn);
    }

    #[test]
    fn readyz_failures_say_what_failed_and_how_to_fix_it() {
        let tls = crate::net::tls::tls_config(None, None, None, true).unwrap();
        let s = HealthSettings::with_defaults(CheckKind::Https {
            path: "/readyz".into(),
            host: None,
            tls,
        });
        let f = readyz(master(), &s, Err(health::Failure::HttpStatus(503)));
        assert_eq!(
            f.line(),
            "fail master-readyz: 192.0.2.11:6443: GET /readyz: HTTP status 503; fix: start or repair this API server, or remove it from --backend"
        );
        let f = readyz(master(), &s, Ok(Duration::from_millis(3)));
        assert_eq!(
            f.line(),
            "ok   master-readyz: 192.0.2.11:6443: GET /readyz answered in 3.0ms"
        );
        let f = readyz(
            master(),
            &s,
            Err(health::Failure::Tls("unknown issuer".into())),
        );
        assert!(f.fix.contains("--ca-file"), "{}", f.fix);
    }

    #[test]
    fn sans_and_expiry_are_read_from_a_real_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["192.0.2.100".into(), "kubernetes".into()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = parse_certificate(cert.der()).unwrap();
        assert_eq!(f.ips, vec!["192.0.2.100".parse::<IpAddr>().unwrap()]);
        assert_eq!(f.dns, vec!["kubernetes".to_string()]);
        // rcgen's default validity ends in 4096.
        assert!(f.not_after > 4_000_000_000, "{}", f.not_after);
        assert!(parse_certificate(b"not a certificate").is_err());
    }

    #[test]
    fn a_master_off_the_attached_interfaces_or_unresolved_fails() {
        use crate::control::nexthop::NextHop;
        let attached = [(2, "eth0".to_string())];
        let hop = |ifindex, mac| {
            Ok(Hop::Remote(NextHop {
                ifindex,
                neighbour: "192.0.2.11".parse().unwrap(),
                via_gateway: false,
                mac,
                state: if mac.is_some() { "reachable" } else { "failed" },
            }))
        };
        let name = |i: u32| format!("if{i}");
        assert_eq!(
            route(
                master(),
                hop(2, Some([2, 0, 0, 0, 3, 0x0b])),
                &attached,
                name
            )
            .line(),
            "ok   master-route: 192.0.2.11:6443: on eth0, MAC 02:00:00:00:03:0b"
        );
        let f = route(master(), hop(7, Some([2; 6])), &attached, name);
        assert_eq!(
            f.line(),
            "fail master-route: 192.0.2.11:6443: routed out of if7, not an --interface: the daemon leaves it out of the table; fix: add --interface if7, or route the master out of an attached interface"
        );
        let f = route(master(), hop(2, None), &attached, name);
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.seen.contains("not resolved (neighbour state failed)"),
            "{}",
            f.seen
        );
        assert_eq!(
            route(master(), Ok(Hop::Local), &attached, name).level,
            Level::Ok
        );
    }

    #[test]
    fn masters_of_different_issuers_warn_naming_them() {
        let a: SocketAddr = "192.0.2.11:6443".parse().unwrap();
        let b: SocketAddr = "192.0.2.12:6443".parse().unwrap();
        assert_eq!(one_issuer(&[]), None);
        let same = one_issuer(&[
            (a, "\"CN=kubernetes\"".into()),
            (b, "\"CN=kubernetes\"".into()),
        ]);
        assert_eq!(same.unwrap().level, Level::Ok);
        let f = one_issuer(&[(a, "\"CN=kubernetes\"".into()), (b, "\"CN=other\"".into())]).unwrap();
        assert_eq!(
            f.seen,
            "the masters' certificates come from different issuers: \"CN=kubernetes\" (192.0.2.11:6443); \"CN=other\" (192.0.2.12:6443)"
        );
        assert_eq!(f.level, Level::Warn);
    }
}
