//! haproxy's configuration: the API server frontend's port, its servers and health-check timings.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
};

use super::{ImportError, perr, read_config, shown};

/// What haproxy's configuration contributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Haproxy {
    /// The frontend's port (the VIP's port).
    pub port: u16,
    /// `IP:PORT[@WEIGHT]` of each server.
    pub backends: Vec<String>,
    /// `https` or `tcp`.
    pub health: Option<&'static str>,
    pub health_path: Option<String>,
    pub health_interval: Option<String>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
}

struct Section {
    kind: String,
    name: String,
    at: usize,
    lines: Vec<(usize, Vec<String>)>,
}

const SECTIONS: &[&str] = &[
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
];

fn bind_port(spec: &str) -> Option<u16> {
    spec.split(',')
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .next()
}

/// haproxy's time format (`2s`, `500ms`, bare milliseconds) as an xvip duration.
fn haproxy_time(s: &str) -> Option<String> {
    if s.chars().all(|c| c.is_ascii_digit()) {
        return Some(format!("{s}ms"));
    }
    let t = s.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &s[t.len()..];
    (["ms", "s", "m"].contains(&unit) && t.parse::<f64>().is_ok()).then(|| s.to_string())
}

/// Reads the frontend for port 6443 (or the only one) of a haproxy configuration, its
/// backend's servers and health check; `notes` gets what does not carry over.
///
/// # Errors
/// [`ImportError`] when the file cannot be read, no frontend can be chosen, or a server
/// address is not an IP address.
pub fn parse_haproxy(path: &Path, notes: &mut Vec<String>) -> Result<Haproxy, ImportError> {
    let text = read_config(path)?;
    let file = path.display().to_string();
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let Some(first) = words.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            sections.push(Section {
                kind: first.clone(),
                name: words.get(1).cloned().unwrap_or_default(),
                at: i + 1,
                lines: Vec::new(),
            });
        } else if let Some(s) = sections.last_mut() {
            s.lines.push((i + 1, words));
        } else {
            return Err(perr(
                path,
                i + 1,
                format!("'{first}' outside of any section"),
            ));
        }
    }
    // Frontends (and listen sections) with their ports.
    let fronts: Vec<(&Section, u16)> = sections
        .iter()
        .filter(|s| s.kind == "frontend" || s.kind == "listen")
        .filter_map(|s| {
            s.lines
                .iter()
                .find(|(_, w)| w[0] == "bind")
                .and_then(|(_, w)| w.get(1))
                .and_then(|b| bind_port(b))
                .map(|p| (s, p))
        })
        .collect();
    let (front, port) = match fronts.iter().find(|(_, p)| *p == lb_common::DEFAULT_PORT) {
        Some(f) => *f,
        None if fronts.len() == 1 => fronts[0],
        None => {
            return Err(ImportError::Choice {
                path: file,
                reason: format!(
                    "no frontend binds port {} and there is not exactly one frontend ({} found)",
                    lb_common::DEFAULT_PORT,
                    fronts.len()
                ),
            });
        }
    };
    for (line, w) in &front.lines {
        if w[0] == "use_backend" {
            notes.push(format!(
                "{file}:{line}: '{}': xvip has one backend set per VIP; only default_backend is carried over",
                shown(w)
            ));
        }
    }
    let back = if front.kind == "listen" {
        front
    } else {
        let name = front
            .lines
            .iter()
            .find(|(_, w)| w[0] == "default_backend")
            .and_then(|(_, w)| w.get(1))
            .ok_or_else(|| ImportError::Choice {
                path: file.clone(),
                reason: format!(
                    "frontend {} (line {}) has no default_backend",
                    front.name, front.at
                ),
            })?;
        sections
            .iter()
            .find(|s| s.kind == "backend" && &s.name == name)
            .ok_or_else(|| ImportError::Choice {
                path: file.clone(),
                reason: format!(
                    "backend {name} (default_backend of frontend {}) not found",
                    front.name
                ),
            })?
    };
    let mut h = Haproxy {
        port,
        ..Default::default()
    };
    let mut tls = false;
    let mut checks = 0;
    let mut check_kind: Option<(usize, &'static str)> = None;
    let mut server_params: Vec<(usize, String, String)> = Vec::new();
    for (line, w) in &back.lines {
        let l = shown(w);
        match (w[0].as_str(), w.get(1).map(String::as_str)) {
            ("server", _) => {
                let (Some(name), Some(addr)) = (w.get(1), w.get(2)) else {
                    return Err(perr(path, *line, "server needs a name and an address"));
                };
                let params = &w[3..];
                if params.iter().any(|p| p == "disabled") {
                    notes.push(format!(
                        "{file}:{line}: '{l}': disabled servers are not carried over"
                    ));
                    continue;
                }
                let backup = params.iter().any(|p| p == "backup");
                // haproxy writes IPv6 servers as `[addr]:port`, `addr:port` or a bare `addr`.
                let (ip, p) = if let Some(rest) = addr.strip_prefix('[') {
                    match rest.split_once("]:") {
                        Some((ip, p)) => (ip, p.parse::<u16>().ok()),
                        None => (rest.trim_end_matches(']'), None),
                    }
                } else if addr.parse::<std::net::Ipv6Addr>().is_ok() {
                    (addr.as_str(), None)
                } else {
                    match addr.rsplit_once(':') {
                        Some((ip, p)) => (ip, p.parse::<u16>().ok()),
                        None => (addr.as_str(), None),
                    }
                };
                let ip: IpAddr = ip.parse().map_err(|_| {
                    perr(path, *line, format!("server {name}: '{addr}' is not an IPv4 or IPv6 address (xvip needs addresses, not names)"))
                })?;
                let port = p.unwrap_or(port);
                let mut spec = SocketAddr::new(ip, port).to_string();
                let mut it = params.iter();
                while let Some(p) = it.next() {
                    match p.as_str() {
                        "check" => checks += 1,
                        "backup" => {}
                        "check-ssl" => tls = true,
                        "weight" => {
                            if let Some(v) = it.next() {
                                spec = format!("{spec}@{v}");
                            }
                        }
                        "inter" | "fall" | "rise" => {
                            if let Some(v) = it.next() {
                                server_params.push((*line, p.clone(), v.clone()));
                            }
                        }
                        "ssl" => tls = true,
                        "verify" | "sni" | "ca-file" | "crt" => {
                            it.next();
                        }
                        "port" => {
                            let v = it.next().cloned().unwrap_or_default();
                            notes.push(format!(
                                "{file}:{line}: server {name} 'port {v}': xvip checks the server's own port"
                            ));
                        }
                        other => notes.push(format!(
                            "{file}:{line}: server {name} '{}': not carried over",
                            shown(std::slice::from_ref(&other.to_string()))
                        )),
                    }
                }
                if backup {
                    spec.push_str(",backup");
                }
                h.backends.push(spec);
            }
            ("default-server", _) => {
                let mut it = w[1..].iter();
                while let Some(p) = it.next() {
                    if ["inter", "fall", "rise"].contains(&p.as_str())
                        && let Some(v) = it.next()
                    {
                        server_params.push((*line, p.clone(), v.clone()));
                    }
                }
            }
            ("option", Some("httpchk")) => {
                check_kind = Some((*line, "https"));
                // option httpchk [<method>] <uri> [<version>]
                let uri = match w.len() {
                    3 => Some(w[2].clone()),
                    n if n >= 4 => Some(w[3].clone()),
                    _ => None,
                };
                if uri.is_some() {
                    h.health_path = uri;
                }
            }
            ("http-check", Some("send")) => {
                if let Some(i) = w.iter().position(|x| x == "uri") {
                    h.health_path = w.get(i + 1).cloned();
                }
                if let Some(i) = w.iter().position(|x| x == "meth")
                    && w.get(i + 1).is_some_and(|m| m != "GET")
                {
                    notes.push(format!("{file}:{line}: '{l}': xvip's check is always GET"));
                }
            }
            ("http-check", Some("connect")) => tls |= w.iter().any(|x| x == "ssl"),
            ("http-check", Some("expect")) => {
                if w.join(" ") != "http-check expect status 200" {
                    notes.push(format!(
                        "{file}:{line}: '{l}': xvip's check expects status 200"
                    ));
                }
            }
            ("option", Some("ssl-hello-chk")) => {
                tls = true;
                notes.push(format!(
                    "{file}:{line}: '{l}': haproxy then checks only the TLS handshake; xvip checks HTTPS GET of the health path"
                ));
            }
            ("option", Some("tcp-check")) => check_kind = Some((*line, "tcp")),
            ("mode", Some("tcp")) => {}
            ("balance", _) => notes.push(format!(
                "{file}:{line}: '{l}': xvip balances new connections with a Maglev table (consistent hashing)"
            )),
            ("timeout", _) | ("option", Some("tcplog")) | ("log", _) => {}
            _ => notes.push(format!("{file}:{line}: '{l}': not carried over")),
        }
    }
    if h.backends.is_empty() {
        return Err(ImportError::Choice {
            path: file,
            reason: format!(
                "backend {} (line {}) has no usable server",
                back.name, back.at
            ),
        });
    }
    h.health = match check_kind {
        Some((_, "https")) => Some("https"),
        Some((line, _)) => {
            notes.push(format!(
                "{file}:{line}: a TCP check; xvip's HTTPS /readyz check is better for API servers (docs/health-checks.md)"
            ));
            Some("tcp")
        }
        None if checks > 0 => Some("tcp"),
        None => None,
    };
    if h.health == Some("https") && !tls {
        notes.push(format!(
            "{file}:{}: haproxy's HTTP check is plain HTTP; xvip checks over HTTPS (API servers serve TLS only)",
            back.at
        ));
    }
    if let Some(p) = &h.health_path
        && p == "/healthz"
    {
        notes.push(format!(
            "{file}:{}: health path /healthz kept; xvip recommends /readyz (docs/health-checks.md)",
            back.at
        ));
    }
    for key in ["inter", "fall", "rise"] {
        let vals: Vec<&(usize, String, String)> =
            server_params.iter().filter(|(_, k, _)| k == key).collect();
        let Some((line, _, v)) = vals.first() else {
            continue;
        };
        if vals.iter().any(|(_, _, o)| o != v) {
            notes.push(format!(
                "{file}:{line}: '{key}' differs between servers; xvip has one value, {v} taken"
            ));
        }
        match key {
            "inter" => match haproxy_time(v) {
                Some(t) => h.health_interval = Some(t),
                None => notes.push(format!("{file}:{line}: inter {v}: not a time xvip reads")),
            },
            "fall" => h.fall = v.parse().ok(),
            _ => h.rise = v.parse().ok(),
        }
    }
    Ok(h)
}
