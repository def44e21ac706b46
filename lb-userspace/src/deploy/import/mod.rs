//! `xvip import keepalived`: reads a keepalived configuration (nested blocks, `!`/`#`
//! comments, `include`) and optionally haproxy's, and renders the equivalent xvip TOML
//! configuration. What cannot be carried over is returned as notes, one per source line.

use std::{
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
};

pub mod haproxy;
pub mod keepalived_file;

use haproxy::parse_haproxy;
use keepalived_file::parse_keepalived;

/// Largest file read (keepalived's and haproxy's are a few KiB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Why nothing was imported.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImportError {
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    /// A file does not parse, or holds something xvip cannot take over.
    #[error("{path} line {line}: {reason}")]
    Parse {
        path: String,
        line: usize,
        reason: String,
    },
    /// No (or no unique) `vrrp_instance` / frontend to import.
    #[error("{path}: {reason}")]
    Choice { path: String, reason: String },
}

impl ImportError {
    /// 2, like every configuration error.
    pub fn exit_code(&self) -> i32 {
        2
    }
}

/// Where a statement came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One keepalived statement: its words and, for `name ... { ... }`, the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stmt {
    pub words: Vec<String>,
    pub at: Origin,
    pub block: Option<Vec<Stmt>>,
}

impl Stmt {
    fn key(&self) -> &str {
        self.words.first().map(String::as_str).unwrap_or("")
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.words.get(i).map(String::as_str)
    }
    fn children(&self) -> &[Stmt] {
        self.block.as_deref().unwrap_or(&[])
    }
}

fn perr(file: &Path, line: usize, reason: impl ToString) -> ImportError {
    ImportError::Parse {
        path: file.display().to_string(),
        line,
        reason: reason.to_string(),
    }
}

/// Reads a configuration file: a regular file (not a FIFO, a device such as `/dev/zero`, or
/// a directory) of at most [`MAX_FILE_BYTES`], in UTF-8.
fn read_config(path: &Path) -> Result<String, ImportError> {
    use std::io::Read as _;
    let err = |reason: String| ImportError::Read {
        path: path.display().to_string(),
        reason,
    };
    let regular = |meta: std::fs::Metadata| {
        if meta.is_file() {
            Ok(())
        } else {
            Err(err(format!(
                "not a regular file ({}): only configuration files are read",
                kind_of(&meta.file_type())
            )))
        }
    };
    // Looked at before opening (opening a device may do something), and again once open;
    // non-blocking, so a FIFO swapped in between cannot hang the open.
    regular(std::fs::metadata(path).map_err(|e| err(e.to_string()))?)?;
    let file = std::os::unix::fs::OpenOptionsExt::custom_flags(
        std::fs::OpenOptions::new().read(true),
        libc::O_NONBLOCK,
    )
    .open(path)
    .map_err(|e| err(e.to_string()))?;
    regular(file.metadata().map_err(|e| err(e.to_string()))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(format!(
            "larger than {} MiB: not a configuration file",
            MAX_FILE_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|_| err("not UTF-8 text".into()))
}

fn kind_of(t: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Keywords whose lines may carry a secret (a password, a notify script's arguments, an
/// auth string): their notes name the keyword and the line, never the line's words.
const SECRET_HINTS: &[&str] = &[
    "pass", "auth", "secret", "token", "key", "cred", "notify", "script", "user",
];

/// A line's words as a note shows them: whole, or only the first word when any word may
/// carry a secret.
fn shown(words: &[String]) -> String {
    let secret = words.iter().any(|w| {
        let w = w.to_ascii_lowercase();
        SECRET_HINTS.iter().any(|h| w.contains(h))
    });
    match words.first() {
        Some(first) if secret => format!("{first} ... (rest not shown: it may hold a secret)"),
        _ => words.join(" "),
    }
}

/// The result of an import.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Imported {
    /// The xvip TOML configuration.
    pub toml: String,
    /// One line per thing that could not be carried over, naming its source line.
    pub notes: Vec<String>,
}

fn q(s: &str) -> String {
    toml::Value::String(s.into()).to_string()
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| q(s)).collect();
    format!("[{}]", v.join(", "))
}

/// Imports `vrrp_instance` `instance` (or the only one) of the keepalived configuration at
/// `keepalived`, with backends and health check from `haproxy` when given.
///
/// # Errors
/// [`ImportError`] naming the file and line that cannot be parsed or carried over.
pub fn keepalived(
    keepalived: &Path,
    instance: Option<&str>,
    haproxy: Option<&Path>,
) -> Result<Imported, ImportError> {
    let top = parse_keepalived(keepalived)?;
    let file = keepalived.display().to_string();
    let mut notes: Vec<String> = Vec::new();
    let note = |notes: &mut Vec<String>, s: &Stmt, why: &str| {
        notes.push(format!("{}: '{}': {why}", s.at, shown(&s.words)));
    };
    let instances: Vec<&Stmt> = top.iter().filter(|s| s.key() == "vrrp_instance").collect();
    let mut version: u32 = 2;
    let scripts: Vec<&Stmt> = top.iter().filter(|s| s.key() == "vrrp_script").collect();
    for s in &top {
        match s.key() {
            "global_defs" => {
                for g in s.children() {
                    match g.key() {
                        "vrrp_version" => {
                            version = g
                                .arg(1)
                                .and_then(|v| v.parse().ok())
                                .filter(|v| *v == 2 || *v == 3)
                                .ok_or_else(|| {
                                    perr(&g.at.file, g.at.line, "vrrp_version must be 2 or 3")
                                })?;
                        }
                        "router_id" | "enable_script_security" | "script_user" => {}
                        _ => note(&mut notes, g, "global setting not carried over"),
                    }
                }
            }
            "vrrp_instance" | "vrrp_script" => {}
            "vrrp_sync_group" => note(
                &mut notes,
                s,
                "sync groups are not carried over (xvip runs one VRRP instance)",
            ),
            "virtual_server" | "virtual_server_group" => note(
                &mut notes,
                s,
                "LVS is not carried over: the backends come from --haproxy or the backends key",
            ),
            _ => note(&mut notes, s, "not carried over"),
        }
    }
    let inst = match instance {
        Some(name) => instances
            .iter()
            .find(|s| s.arg(1) == Some(name))
            .copied()
            .ok_or_else(|| ImportError::Choice {
                path: file.clone(),
                reason: format!("no vrrp_instance {name}"),
            })?,
        None => match instances.as_slice() {
            [one] => *one,
            [] => {
                return Err(ImportError::Choice {
                    path: file.clone(),
                    reason: "no vrrp_instance".into(),
                });
            }
            many => {
                let names: Vec<&str> = many.iter().filter_map(|s| s.arg(1)).collect();
                return Err(ImportError::Choice {
                    path: file.clone(),
                    reason: format!(
                        "several vrrp_instance blocks ({}): choose one with --instance",
                        names.join(", ")
                    ),
                });
            }
        },
    };
    let iname = inst.arg(1).unwrap_or("").to_string();
    if instances.len() > 1 {
        for other in instances
            .iter()
            .filter(|s| s.arg(1) != Some(iname.as_str()))
        {
            note(
                &mut notes,
                other,
                "other vrrp_instance, not imported (see --instance)",
            );
        }
    }

    let mut interface = None;
    let mut vrid = None;
    let mut priority = None;
    let mut advert = None;
    let mut preempt = true;
    let mut password: Option<String> = None;
    let mut peers: Vec<String> = Vec::new();
    let mut vips: Vec<IpAddr> = Vec::new();
    let mut penalty: Option<u32> = None;
    let mut tracked: Vec<String> = Vec::new();
    let mut notify: Option<String> = None;
    for s in inst.children() {
        match s.key() {
            "interface" => interface = s.arg(1).map(str::to_string),
            "virtual_router_id" => vrid = s.arg(1).map(str::to_string),
            "priority" => {
                let p = s.arg(1).unwrap_or("");
                if p == "255" {
                    note(
                        &mut notes,
                        s,
                        "xvip never uses 255 (it does not own the address): 254",
                    );
                    priority = Some("254".into());
                } else {
                    priority = Some(p.to_string());
                }
            }
            "advert_int" => advert = s.arg(1).map(str::to_string),
            "version" => {
                version = s
                    .arg(1)
                    .and_then(|v| v.parse().ok())
                    .filter(|v| *v == 2 || *v == 3)
                    .ok_or_else(|| perr(&s.at.file, s.at.line, "version must be 2 or 3"))?;
            }
            "state" => note(
                &mut notes,
                s,
                "a start hint only; xvip always starts as backup and listens at least 3 s before it takes the VIP",
            ),
            "nopreempt" => preempt = false,
            "preempt" => preempt = true,
            "authentication" => {
                let kind = s
                    .children()
                    .iter()
                    .find(|a| a.key() == "auth_type")
                    .and_then(|a| a.arg(1))
                    .unwrap_or("PASS");
                match kind.to_ascii_uppercase().as_str() {
                    "PASS" => {}
                    "AH" => {
                        return Err(perr(
                            &s.at.file,
                            s.at.line,
                            "auth_type AH (IPsec) is not supported by xvip; only PASS",
                        ));
                    }
                    k => {
                        return Err(perr(
                            &s.at.file,
                            s.at.line,
                            format!("unknown auth_type {k}"),
                        ));
                    }
                }
                for a in s.children() {
                    match a.key() {
                        "auth_type" => {}
                        "auth_pass" => password = a.arg(1).map(str::to_string),
                        _ => note(&mut notes, a, "not carried over"),
                    }
                }
            }
            "unicast_peer" => {
                for p in s.children() {
                    match p.key().parse::<IpAddr>() {
                        Ok(ip) => peers.push(ip.to_string()),
                        Err(_) => note(&mut notes, p, "not an IP address, left out"),
                    }
                }
            }
            "unicast_src_ip" | "mcast_src_ip" => note(
                &mut notes,
                s,
                "xvip advertises from the interface's primary IPv4 address: make sure it is this one",
            ),
            "virtual_ipaddress" => {
                for v in s.children() {
                    let addr = v.key().split('/').next().unwrap_or("");
                    match addr.parse::<IpAddr>() {
                        Ok(ip) => {
                            vips.push(ip);
                            if v.words.len() > 1 || v.key().contains('/') {
                                note(
                                    &mut notes,
                                    v,
                                    "xvip does not assign the VIP to an interface: prefix and options dropped",
                                );
                            }
                        }
                        Err(_) => note(&mut notes, v, "not an IP address, left out"),
                    }
                }
            }
            "notify" => {
                let path = s.arg(1).map(|p| p.trim_matches('"'));
                match path {
                    Some(p)
                        if s.words.len() == 2
                            && p.starts_with('/')
                            && !p.contains(char::is_whitespace) =>
                    {
                        notify = Some(p.to_string());
                        note(
                            &mut notes,
                            s,
                            "carried over as notify_exec (same arguments: INSTANCE NAME STATE PRIORITY, NAME is vridN); xvip refuses a script writable by group or others",
                        );
                    }
                    _ => note(
                        &mut notes,
                        s,
                        "a notify with arguments is not carried over: wrap it in a script and give notify_exec",
                    ),
                }
            }
            "notify_master" | "notify_backup" | "notify_fault" | "notify_stop" => note(
                &mut notes,
                s,
                "not carried over: xvip runs one notify_exec with the state (MASTER, BACKUP, FAULT, STOP) as $3",
            ),
            "dont_track_primary" => note(
                &mut notes,
                s,
                "not carried over: xvip always tracks the VRRP interface (down: FAULT, never master)",
            ),
            "track_interface" => {
                for t in s.children() {
                    if t.words.iter().any(|w| w == "weight") {
                        note(
                            &mut notes,
                            t,
                            "a weighted track_interface is not carried over: xvip tracks an interface as a fault only (down: never master)",
                        );
                    } else if !tracked.iter().any(|x| x == t.key()) {
                        tracked.push(t.key().to_string());
                    }
                }
            }
            "track_script" => {
                for t in s.children() {
                    let name = t.key();
                    let weight: Option<i64> = match t.words.iter().position(|w| w == "weight") {
                        Some(i) => t.arg(i + 1).and_then(|w| w.parse().ok()),
                        None => scripts
                            .iter()
                            .find(|sc| sc.arg(1) == Some(name))
                            .and_then(|sc| sc.children().iter().find(|c| c.key() == "weight"))
                            .and_then(|c| c.arg(1))
                            .and_then(|w| w.parse().ok()),
                    };
                    match weight {
                        Some(w) if w < 0 => {
                            let w = w.unsigned_abs() as u32;
                            if penalty.is_some_and(|p| p != w) {
                                note(
                                    &mut notes,
                                    t,
                                    "several negative weights: xvip has one penalty, the largest is taken",
                                );
                            }
                            penalty = Some(penalty.unwrap_or(0).max(w));
                            note(
                                &mut notes,
                                t,
                                "carried over as vrrp_health_penalty; xvip lowers its priority while none of its backends is healthy (the script is not run)",
                            );
                        }
                        Some(0) | None => {
                            note(
                                &mut notes,
                                t,
                                "weight 0: keepalived goes to FAULT when the script fails; xvip has no such state (vrrp_health_penalty applies instead)",
                            );
                        }
                        Some(_) => note(&mut notes, t, "a positive weight is not carried over"),
                    }
                }
            }
            _ => note(&mut notes, s, "not carried over"),
        }
    }
    let missing = |what: &str| ImportError::Choice {
        path: file.clone(),
        reason: format!(
            "vrrp_instance {iname} (line {}) has no {what}",
            inst.at.line
        ),
    };
    let interface = interface.ok_or_else(|| missing("interface"))?;
    let vrid = vrid.ok_or_else(|| missing("virtual_router_id"))?;
    if vips.is_empty() {
        return Err(missing("IPv4 virtual_ipaddress"));
    }
    // keepalived's default advert_int is 1 s; xvip's own default (100 ms) would differ.
    let advert_s: f64 = match &advert {
        Some(a) => a.parse().map_err(|_| {
            let s = inst
                .children()
                .iter()
                .find(|s| s.key() == "advert_int")
                .expect("seen");
            perr(
                &s.at.file,
                s.at.line,
                format!("advert_int '{a}' is not a number"),
            )
        })?,
        None => 1.0,
    };
    let advert_int = if version == 2 {
        let whole = advert_s.round().max(1.0);
        if (whole - advert_s).abs() > 1e-9 {
            notes.push(format!(
                "{file}: advert_int {advert_s}: VRRPv2 advertises whole seconds, {whole}s taken"
            ));
        }
        format!("{whole}s")
    } else {
        format!("{}ms", (advert_s * 1000.0).round() as u64)
    };
    let hap = match haproxy {
        Some(p) => Some(parse_haproxy(p, &mut notes)?),
        None => None,
    };

    let mut t = String::new();
    let _ = writeln!(
        t,
        "# xvip configuration imported from vrrp_instance {iname} of {file}{}.",
        haproxy
            .map(|h| format!(" and {}", h.display()))
            .unwrap_or_default()
    );
    let _ = writeln!(
        t,
        "# Holds the VRRP password: keep it readable by root only."
    );
    let _ = writeln!(t, "interface = {}", q(&interface));
    let port = hap
        .as_ref()
        .map(|h| h.port)
        .unwrap_or(lb_common::DEFAULT_PORT);
    let vips: Vec<String> = vips
        .iter()
        .map(|v| SocketAddr::new(*v, port).to_string())
        .collect();
    let _ = writeln!(t, "vips = {}", list(&vips));
    match &hap {
        Some(h) => {
            let _ = writeln!(t, "backends = {}", list(&h.backends));
            if let Some(k) = h.health {
                let _ = writeln!(t, "health = {}", q(k));
            }
            if let Some(p) = &h.health_path {
                let _ = writeln!(t, "health_path = {}", q(p));
            }
            if let Some(i) = &h.health_interval {
                let _ = writeln!(t, "health_interval = {}", q(i));
            }
            if let Some(r) = h.rise {
                let _ = writeln!(t, "rise = {r}");
            }
            if let Some(f) = h.fall {
                let _ = writeln!(t, "fall = {f}");
            }
        }
        None => {
            notes.push(format!(
                "{file}: no backends (keepalived does not know them): give --haproxy HAPROXY.CFG or add backends = [\"IP:6443\", ...]"
            ));
            let _ = writeln!(
                t,
                "# backends = [\"MASTER1:6443\", \"MASTER2:6443\", \"MASTER3:6443\"]"
            );
        }
    }
    let _ = writeln!(t, "vrrp_vrid = {vrid}");
    let _ = writeln!(t, "vrrp_version = {version}");
    if let Some(p) = &priority {
        let _ = writeln!(t, "vrrp_priority = {p}");
    }
    let _ = writeln!(t, "vrrp_advert_int = {}", q(&advert_int));
    if !preempt {
        let _ = writeln!(t, "vrrp_preempt = false");
    }
    if !tracked.is_empty() {
        let _ = writeln!(t, "vrrp_track_interfaces = {}", list(&tracked));
    }
    if let Some(n) = &notify {
        let _ = writeln!(t, "notify_exec = {}", q(n));
    }
    match (&password, version) {
        (Some(pw), 2) => {
            if pw.len() > crate::wire::vrrp::AUTH_LEN {
                notes.push(format!(
                    "{file}: auth_pass is longer than 8 bytes: keepalived and xvip use the first 8"
                ));
            }
            let _ = writeln!(t, "vrrp_auth_pass = {}", q(pw));
        }
        (Some(_), _) => notes.push(format!(
            "{file}: authentication is ignored with VRRPv3 (keepalived ignores it too)"
        )),
        (None, _) => {}
    }
    if !peers.is_empty() {
        let _ = writeln!(t, "vrrp_peers = {}", list(&peers));
    }
    if let Some(p) = penalty {
        let _ = writeln!(t, "vrrp_health_penalty = {p}");
    }
    Ok(Imported { toml: t, notes })
}

#[cfg(test)]
mod tests {
    use super::keepalived_file::{MAX_FILES, MAX_INCLUDE_DEPTH};
    use super::*;

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Self {
            let d = std::env::temp_dir().join(format!("xvip-import-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(&d).unwrap();
            Self(d)
        }
        fn file(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d).unwrap();
            }
            std::fs::write(&p, text).unwrap();
            p
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const GUIDE_KA: &str = include_str!("../../../../tests/fixtures/kubeadm/keepalived.conf");
    const GUIDE_HAPROXY: &str = include_str!("../../../../tests/fixtures/kubeadm/haproxy.cfg");

    /// The guide's files with the placeholders filled in as it says.
    fn guide(d: &Dir) -> (PathBuf, PathBuf) {
        let ka = GUIDE_KA
            .replace("${STATE}", "MASTER")
            .replace("${INTERFACE}", "eth0")
            .replace("${ROUTER_ID}", "51")
            .replace("${PRIORITY}", "101")
            .replace("${AUTH_PASS}", "42")
            .replace("${APISERVER_VIP}", "192.0.2.100");
        let mut hap = GUIDE_HAPROXY
            .replace("${APISERVER_DEST_PORT}", "6443")
            .replace("${APISERVER_SRC_PORT}", "6443");
        let servers = "        server m1 192.0.2.11:6443 check\n        server m2 192.0.2.12:6443 check\n        server m3 192.0.2.13:6443 check\n";
        hap = hap.replace(
            "        server ${HOST1_ID} ${HOST1_ADDRESS}:6443 check\n",
            servers,
        );
        (d.file("keepalived.conf", &ka), d.file("haproxy.cfg", &hap))
    }

    fn check(toml: &str, d: &Dir) -> crate::config::Settings {
        let p = d.file("xvip.toml", toml);
        crate::config::args::RunArgs {
            config: Some(p),
            ..Default::default()
        }
        .resolve()
        .unwrap_or_else(|e| panic!("{e}\n{toml}"))
    }

    #[test]
    fn the_guides_keepalived_and_haproxy_become_an_xvip_config_that_checks() {
        let d = Dir::new("guide");
        let (ka, hap) = guide(&d);
        let out = keepalived(&ka, None, Some(&hap)).unwrap();
        let s = check(&out.toml, &d);
        assert_eq!(s.interface, "eth0");
        assert_eq!(s.vips.len(), 1);
        assert_eq!(s.vips[0].addr, std::net::Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(s.vips[0].port, 6443);
        let b: Vec<String> = s.backends.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(b, ["192.0.2.11:6443", "192.0.2.12:6443", "192.0.2.13:6443"]);
        assert_eq!(s.health.kind, crate::config::HealthKind::Https);
        assert_eq!(s.health.path, "/healthz");
        let v = s.vrrp.unwrap();
        assert_eq!(v.vrid, 51);
        assert_eq!(v.priority, 101);
        assert_eq!(v.version, crate::wire::vrrp::Version::V2);
        assert_eq!(v.auth, crate::wire::vrrp::Auth::pass(b"42"));
        assert_eq!(v.advert_interval, std::time::Duration::from_secs(1));
        assert!(v.preempt);
        assert_eq!(v.health_penalty, 2, "track_script weight -2");
        let notes = out.notes.join("\n");
        // Each note names its line.
        for (what, line) in [
            ("state MASTER", ":15:"),
            ("check_apiserver", ":27:"),
            ("balance", ":"),
        ] {
            assert!(
                out.notes
                    .iter()
                    .any(|n| n.contains(what) && n.contains(line)),
                "{what}: {notes}"
            );
        }
        assert!(notes.contains("ssl-hello-chk"), "{notes}");
    }

    #[test]
    fn comments_includes_nesting_and_the_options_the_guide_relies_on() {
        let d = Dir::new("syntax");
        d.file(
            "conf.d/inst.conf",
            "vrrp_instance K8S\n{\n  interface ens3 # trailing comment\n  virtual_router_id 7\n  priority 90\n  advert_int 2\n  nopreempt\n  unicast_src_ip 192.0.2.2\n  unicast_peer {\n    192.0.2.3\n    192.0.2.4\n  }\n  virtual_ipaddress { 192.0.2.100/24 dev ens3 label ens3:vip }\n  authentication {\n    auth_type PASS\n    auth_pass \"longerthan8\"\n  }\n  track_script {\n    chk weight -30\n  }\n}\n",
        );
        let ka = d.file(
            "keepalived.conf",
            "! top comment\n# another\nglobal_defs {\n  router_id x\n}\ninclude conf.d/*.conf\n",
        );
        let out = keepalived(&ka, None, None).unwrap();
        assert!(out.toml.contains("vrrp_preempt = false"), "{}", out.toml);
        assert!(
            out.toml
                .contains("vrrp_peers = [\"192.0.2.3\", \"192.0.2.4\"]"),
            "{}",
            out.toml
        );
        assert!(
            out.toml.contains("vrrp_advert_int = \"2s\""),
            "{}",
            out.toml
        );
        assert!(
            out.toml.contains("vrrp_health_penalty = 30"),
            "{}",
            out.toml
        );
        assert!(
            out.toml.contains("vips = [\"192.0.2.100:6443\"]"),
            "{}",
            out.toml
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("inst.conf:8") && n.contains("unicast_src_ip")),
            "{:?}",
            out.notes
        );
        assert!(
            out.notes.iter().any(|n| n.contains("no backends")),
            "{:?}",
            out.notes
        );
        // With backends added by hand it checks.
        let s = check(&format!("{}backends = [\"192.0.2.11\"]\n", out.toml), &d);
        let v = s.vrrp.unwrap();
        assert_eq!((v.vrid, v.priority, v.preempt), (7, 90, false));
        assert_eq!(v.auth, crate::wire::vrrp::Auth::pass(b"longerth"));
    }

    #[test]
    fn track_interface_is_carried_over_and_a_weighted_one_is_noted() {
        let d = Dir::new("track");
        let ka = d.file(
            "k.conf",
            "vrrp_instance A {\n interface eth0\n virtual_router_id 51\n dont_track_primary\n virtual_ipaddress {\n 192.0.2.100\n }\n track_interface {\n eth1\n bond0\n eth2 weight -20\n eth1\n }\n}\n",
        );
        let out = keepalived(&ka, None, None).unwrap();
        assert!(
            out.toml
                .contains("vrrp_track_interfaces = [\"eth1\", \"bond0\"]"),
            "{}",
            out.toml
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("k.conf:11") && n.contains("weighted track_interface")),
            "{:?}",
            out.notes
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("k.conf:4") && n.contains("always tracks the VRRP interface")),
            "{:?}",
            out.notes
        );
        let s = check(&format!("{}backends = [\"192.0.2.11\"]\n", out.toml), &d);
        assert_eq!(s.vrrp.unwrap().track_interfaces, ["eth1", "bond0"]);
        // A bare notify script is carried over; per-state scripts are noted.
        let ka = d.file(
            "n.conf",
            "vrrp_instance A {\n interface eth0\n virtual_router_id 51\n virtual_ipaddress {\n 192.0.2.100\n }\n notify /usr/local/bin/vrrp-hook\n notify_master /usr/local/bin/up\n}\n",
        );
        let out = keepalived(&ka, None, None).unwrap();
        assert!(
            out.toml
                .contains("notify_exec = \"/usr/local/bin/vrrp-hook\""),
            "{}",
            out.toml
        );
        assert!(
            out.notes
                .iter()
                .any(|n| n.contains("n.conf:8") && n.contains("one notify_exec")),
            "{:?}",
            out.notes
        );
    }

    #[test]
    fn v3_groups_keep_their_sub_second_interval_and_drop_the_password() {
        let d = Dir::new("v3");
        let ka = d.file(
            "k.conf",
            "global_defs {\n vrrp_version 3\n}\nvrrp_instance A {\n interface eth0\n virtual_router_id 51\n advert_int 0.1\n authentication {\n auth_type PASS\n auth_pass x\n }\n virtual_ipaddress {\n 192.0.2.100\n }\n}\nvrrp_instance B {\n interface eth0\n virtual_router_id 52\n virtual_ipaddress {\n 192.0.2.101\n }\n}\n",
        );
        assert!(
            matches!(keepalived(&ka, None, None), Err(ImportError::Choice { reason, .. }) if reason.contains("A, B"))
        );
        let out = keepalived(&ka, Some("A"), None).unwrap();
        assert!(
            out.toml.contains("vrrp_version = 3") && out.toml.contains("\"100ms\""),
            "{}",
            out.toml
        );
        assert!(!out.toml.contains("auth_pass"), "{}", out.toml);
        let out = keepalived(&ka, Some("B"), None).unwrap();
        assert!(
            out.toml.contains("vrrp_advert_int = \"1000ms\""),
            "keepalived's default: {}",
            out.toml
        );
        assert!(keepalived(&ka, Some("C"), None).is_err());
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let d = Dir::new("bad");
        let cases = [
            ("vrrp_instance A {\n interface eth0\n", 1, "never closed"),
            ("global_defs {\n}\n}\n", 3, "without a matching"),
            (
                "vrrp_instance A {\n script \"unterminated\n}\n",
                2,
                "unterminated",
            ),
            ("global_defs {\n vrrp_version 4\n}\n", 2, "vrrp_version"),
            (
                "vrrp_instance A {\n interface eth0\n virtual_router_id 1\n virtual_ipaddress {\n 192.0.2.1\n }\n authentication {\n auth_type AH\n auth_pass x\n }\n}\n",
                7,
                "AH",
            ),
            ("include\n", 1, "include"),
        ];
        for (text, line, what) in cases {
            let p = d.file("bad.conf", text);
            match keepalived(&p, None, None) {
                Err(e @ ImportError::Parse { .. }) => {
                    let msg = e.to_string();
                    assert!(
                        msg.contains(&format!("bad.conf line {line}:")) && msg.contains(what),
                        "{msg}"
                    );
                    assert_eq!(e.exit_code(), 2);
                }
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            keepalived(&d.0.join("missing.conf"), None, None),
            Err(ImportError::Read { .. })
        ));
        // A looping include ends.
        let p = d.file("loop.conf", "include loop.conf\n");
        assert!(
            matches!(keepalived(&p, None, None), Err(ImportError::Read { reason, .. }) if reason.contains("include loop"))
        );
    }

    #[test]
    fn include_loops_globs_and_depth_are_bounded_and_named() {
        let d = Dir::new("loops");
        // a -> b -> a: the loop is named, whichever way round.
        let a = d.file("a.conf", "include b.conf\n");
        d.file("b.conf", "include ./a.conf\n");
        let e = keepalived(&a, None, None).unwrap_err().to_string();
        assert!(
            e.contains("include loop") && e.contains("a.conf -> ") && e.contains("b.conf"),
            "{e}"
        );
        // Every file of a glob including the glob again: a loop, found at once.
        for i in 0..8 {
            d.file(&format!("g/{i}.conf"), "include *.conf\n");
        }
        let t = std::time::Instant::now();
        let e = keepalived(&d.0.join("g/0.conf"), None, None).unwrap_err();
        assert!(e.to_string().contains("include loop"), "{e}");
        // A diamond without a loop (8 files each including the next 8 levels of a fan
        // of 4) is legal keepalived but cut at MAX_FILES reads, not 4^8.
        for lvl in 0..8 {
            for i in 0..4 {
                let text = match lvl {
                    7 => "\n".to_string(),
                    _ => format!("include ../{}/*.conf\n", lvl + 1),
                };
                d.file(&format!("f/{lvl}/{i}.conf"), &text);
            }
        }
        let e = keepalived(&d.0.join("f/0/0.conf"), None, None).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("more than {MAX_FILES} files")),
            "{e}"
        );
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        // Nesting without a loop still stops at MAX_INCLUDE_DEPTH.
        for i in 0..=MAX_INCLUDE_DEPTH {
            d.file(&format!("n{i}.conf"), &format!("include n{}.conf\n", i + 1));
        }
        d.file(&format!("n{}.conf", MAX_INCLUDE_DEPTH + 1), "\n");
        let e = keepalived(&d.0.join("n0.conf"), None, None).unwrap_err();
        assert!(e.to_string().contains("deeper"), "{e}");
    }

    #[test]
    fn devices_fifos_directories_and_huge_files_are_refused_without_reading_them() {
        let d = Dir::new("special");
        let t = std::time::Instant::now();
        for (path, what) in [
            (PathBuf::from("/dev/zero"), "character device"),
            (d.0.clone(), "directory"),
        ] {
            let e = keepalived(&path, None, None).unwrap_err().to_string();
            assert!(e.contains("not a regular file") && e.contains(what), "{e}");
            let inc = d.file("inc.conf", &format!("include {}\n", path.display()));
            let e = keepalived(&inc, None, None).unwrap_err().to_string();
            assert!(e.contains("not a regular file"), "{e}");
            let e = parse_haproxy(&path, &mut Vec::new())
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a regular file"), "{e}");
        }
        // A FIFO nobody writes to would block a read forever.
        let fifo = d.0.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) on a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let inc = d.file("inc.conf", "include fifo\n");
        let e = keepalived(&inc, None, None).unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        let big = d.file("big.conf", &"! comment\n".repeat(200_000));
        let e = keepalived(&big, None, None).unwrap_err().to_string();
        assert!(e.contains("larger than 1 MiB"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn notes_never_echo_a_secret_bearing_line() {
        let d = Dir::new("secrets");
        let ka = d.file(
            "keepalived.conf",
            "global_defs {\n notification_email { ops@example.org }\n}\n\
             vrrp_instance A {\n interface eth0\n virtual_router_id 51\n priority 100\n\
             virtual_ipaddress {\n 192.0.2.100\n }\n\
             notify_master \"/usr/local/bin/page --token=hunter2\"\n\
             notify \"/bin/hook s3cr3t-key\"\n}\n",
        );
        let hap = d.file(
            "haproxy.cfg",
            "frontend api\n bind *:6443\n default_backend b\n\
             backend b\n stats auth admin:hunter2\n http-request auth realm s3cr3t\n\
             server m1 192.0.2.11:6443 check\n",
        );
        let out = keepalived(&ka, None, Some(&hap)).unwrap();
        let all = out.notes.join("\n");
        for secret in ["hunter2", "s3cr3t", "--token"] {
            assert!(!all.contains(secret), "{secret} echoed: {all}");
        }
        // The keyword and the line are said, so the operator can look.
        assert!(
            all.contains("keepalived.conf:11: 'notify_master ..."),
            "{all}"
        );
        assert!(all.contains("keepalived.conf:12: 'notify ..."), "{all}");
        assert!(all.contains("haproxy.cfg:5: 'stats ..."), "{all}");
        assert!(all.contains("haproxy.cfg:6: 'http-request ..."), "{all}");
    }

    #[test]
    fn a_haproxy_backup_server_is_a_backup_in_the_imported_config() {
        let d = Dir::new("backup");
        let (ka, hap) = guide(&d);
        let text = std::fs::read_to_string(&hap).unwrap().replace(
            "server m3 192.0.2.13:6443 check\n",
            "server m3 192.0.2.13:6443 check backup\n",
        );
        let hap = d.file("haproxy.cfg", &text);
        let out = keepalived(&ka, None, Some(&hap)).unwrap();
        let s = check(&out.toml, &d);
        let roles: Vec<(String, bool)> = s
            .backends
            .iter()
            .map(|b| (b.addr.to_string(), b.backup))
            .collect();
        assert_eq!(
            roles,
            [
                ("192.0.2.11:6443".into(), false),
                ("192.0.2.12:6443".into(), false),
                ("192.0.2.13:6443".into(), true)
            ]
        );
    }

    #[test]
    fn haproxy_variants_newer_guide_listen_sections_and_bad_servers() {
        let d = Dir::new("hap");
        let mut notes = Vec::new();
        // The newer guide: http-check connect ssl / send meth GET uri, frontend on 8443.
        let p = d.file(
            "h.cfg",
            "frontend apiserver\n    bind *:8443\n    mode tcp\n    default_backend be\nbackend be\n    option httpchk\n    http-check connect ssl\n    http-check send meth GET uri /readyz\n    http-check expect status 200\n    mode tcp\n    balance roundrobin\n    default-server inter 500ms fall 4 rise 3\n    server a 192.0.2.11:6443 check verify none weight 3\n    server b 192.0.2.12:6443 check verify none\n    server c 192.0.2.13:6443 check backup\n",
        );
        let h = parse_haproxy(&p, &mut notes).unwrap();
        assert_eq!(h.port, 8443);
        // haproxy's backup server stays a backup.
        assert_eq!(
            h.backends,
            [
                "192.0.2.11:6443@3",
                "192.0.2.12:6443",
                "192.0.2.13:6443,backup"
            ]
        );
        assert_eq!(
            (h.health, h.health_path.as_deref()),
            (Some("https"), Some("/readyz"))
        );
        assert_eq!(
            (h.health_interval.as_deref(), h.fall, h.rise),
            (Some("500ms"), Some(4), Some(3))
        );
        assert!(!notes.iter().any(|n| n.contains("h.cfg:15")), "{notes:?}");
        let p = d.file(
            "l.cfg",
            "listen api\n  bind 0.0.0.0:6443\n  option tcp-check\n  server a 192.0.2.11 check\n",
        );
        let h = parse_haproxy(&p, &mut notes).unwrap();
        assert_eq!((h.port, h.health), (6443, Some("tcp")));
        assert_eq!(h.backends, ["192.0.2.11:6443"]);
        let p = d.file("n.cfg", "frontend f\n  bind :6443\n  default_backend b\nbackend b\n  server a master1.example:6443 check\n");
        assert!(matches!(
            parse_haproxy(&p, &mut notes),
            Err(ImportError::Parse { line: 5, .. })
        ));
        let p = d.file("x.cfg", "frontend f\n  bind :80\nfrontend g\n  bind :443\n");
        assert!(matches!(
            parse_haproxy(&p, &mut notes),
            Err(ImportError::Choice { .. })
        ));
    }

    #[test]
    fn an_ipv6_keepalived_instance_and_haproxy_servers_become_ipv6_vips_and_backends() {
        let d = Dir::new("v6");
        let ka = d.file(
            "k.conf",
            "global_defs {\n vrrp_version 3\n}\nvrrp_instance V6 {\n interface eth0\n virtual_router_id 51\n advert_int 0.1\n unicast_peer {\n  fe80::3\n }\n virtual_ipaddress {\n  2001:db8::100/64 dev eth0\n }\n}\n",
        );
        let hap = d.file(
            "h.cfg",
            "frontend f\n  bind :::6443\n  default_backend b\nbackend b\n  option tcp-check\n  server a [2001:db8::11]:6443 check\n  server b 2001:db8::12 check weight 2\n",
        );
        let out = keepalived(&ka, None, Some(&hap)).unwrap();
        assert!(
            out.toml.contains("vips = [\"[2001:db8::100]:6443\"]"),
            "{}",
            out.toml
        );
        let s = check(&out.toml, &d);
        assert_eq!(s.vips6.len(), 1);
        let b: Vec<String> = s.backends6.iter().map(|b| b.addr.to_string()).collect();
        assert_eq!(b, ["[2001:db8::11]:6443", "[2001:db8::12]:6443"]);
        assert_eq!(s.backends6[1].weight, 2);
        let v = s.vrrp.expect("vrrp");
        assert_eq!(v.peers, ["fe80::3".parse::<IpAddr>().unwrap()]);
    }
}
