//! VRRP's settings (`--vrrp-*`): what the flags mean and the checks they pass. They are
//! written in the protocol's vocabulary (the version, v2 authentication, the limits of the
//! fields they fill), which lives with the packet in `wire::vrrp`. The election is
//! `announce::vrrp`, which reads these; this module never reads it.

use std::{net::IpAddr, time::Duration};

use super::ConfigError;
use crate::wire::vrrp::{AUTH_LEN, Auth, MAX_ADVER_INT_CS, Version};

/// Default advertisement interval (RFC 5798 says 1 s; sub-second takeover needs less).
pub const DEFAULT_ADVERT_INTERVAL: Duration = Duration::from_millis(100);
/// Default advertisement interval of VRRPv2 (whole seconds; keepalived's default too).
pub const DEFAULT_V2_ADVERT_INTERVAL: Duration = Duration::from_secs(1);

/// A secret setting (the VRRP password): parsed from flags, environment or file like any
/// string, but `Debug` never shows it.
#[derive(Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.into()))
    }
}
/// Default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
/// Default priority taken off while no backend can be served.
pub const DEFAULT_HEALTH_PENALTY: u8 = 50;

/// Validated VRRP settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpSettings {
    /// Virtual router ID, 1-255.
    pub vrid: u8,
    /// Priority, 1-254.
    pub priority: u8,
    /// Advertisement interval, a multiple of 10 ms up to 40.95 s.
    pub advert_interval: Duration,
    /// Whether a higher-priority backup takes over from a live master.
    pub preempt: bool,
    /// Unicast peers (of either family; each task uses those of its own); empty means
    /// multicast to 224.0.0.18 / ff02::12.
    pub peers: Vec<IpAddr>,
    /// Priority taken off (down to 1) while this node has no backend to serve.
    pub health_penalty: u8,
    /// VRRP version spoken (v3 by default).
    pub version: Version,
    /// v2 authentication ([`Auth::NONE`] or PASS); its `Debug` hides the password.
    pub auth: Auth,
    /// Interfaces whose loss is a fault (keepalived's `track_interface`): while one is down
    /// (or missing) the router is in FAULT: never master, a master resigns.
    pub track_interfaces: Vec<String>,
    /// Run on every state change, as keepalived's `notify` script
    /// (`PATH INSTANCE NAME STATE PRIORITY`): an absolute path to an executable file
    /// that only its owner may write.
    pub notify_exec: Option<std::path::PathBuf>,
    /// A FIFO a line is written to on every state change, as keepalived's `notify_fifo`
    /// (`INSTANCE "NAME" STATE PRIORITY`); created (mode 0600) when missing.
    pub notify_fifo: Option<std::path::PathBuf>,
    /// The witness (`--vrrp-track-ip`): probed every second; `track_ip_fall` probes in a
    /// row without an answer lower the priority by `track_ip_weight` (down to 1).
    pub track_ip: Option<std::net::Ipv4Addr>,
    pub track_ip_weight: u8,
    pub track_ip_fall: u32,
}

/// Default priority taken off while the witness does not answer.
pub const DEFAULT_TRACK_IP_WEIGHT: u8 = 50;
/// Default probes in a row without an answer before the witness counts as lost.
pub const DEFAULT_TRACK_IP_FALL: u32 = 3;

/// The VRRP settings as given (flags, environment or file), before validation.
#[derive(Clone, Debug, Default)]
pub struct VrrpInput {
    pub vrid: Option<u32>,
    pub priority: Option<u32>,
    pub advert_int: Option<String>,
    pub preempt: Option<bool>,
    pub peers: Vec<String>,
    pub health_penalty: Option<u32>,
    pub version: Option<u32>,
    pub auth_type: Option<String>,
    pub auth_pass: Option<Secret>,
    pub track_interfaces: Vec<String>,
    pub notify_exec: Option<std::path::PathBuf>,
    pub notify_fifo: Option<std::path::PathBuf>,
    pub track_ip: Option<String>,
    pub track_ip_weight: Option<u32>,
    pub track_ip_fall: Option<u32>,
}

/// `--notify-exec`: an absolute path to a regular file with an execute bit that neither its
/// group nor others may write (keepalived's `enable_script_security` rule: whoever can
/// change the script runs code as xvip).
fn check_notify_exec(p: &std::path::Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let bad = |why: &str| invalid("--notify-exec", p.display(), why);
    if !p.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    let m = std::fs::metadata(p).map_err(|e| bad(&e.to_string()))?;
    let mode = m.permissions().mode();
    if !m.is_file() {
        return Err(bad("not a regular file"));
    }
    if mode & 0o111 == 0 {
        return Err(bad("not executable"));
    }
    if mode & 0o022 != 0 {
        return Err(bad("writable by its group or others"));
    }
    Ok(())
}

/// `--notify-fifo`: an absolute path that is a FIFO, or nothing yet (created at start).
fn check_notify_fifo(p: &std::path::Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::FileTypeExt;
    let bad = |why: &str| invalid("--notify-fifo", p.display(), why);
    if !p.is_absolute() {
        return Err(bad("must be an absolute path"));
    }
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_fifo() => Ok(()),
        Ok(_) => Err(bad("exists and is not a FIFO")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(bad(&e.to_string())),
    }
}

/// What an error shows instead of the password.
pub(crate) const HIDDEN: &str = "(not shown)";

fn invalid(field: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        field,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl VrrpSettings {
    /// Validates the VRRP settings; `None` when `--vrrp-vrid` is not given (no failover).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the flag and the value.
    pub fn resolve(i: VrrpInput) -> Result<Option<Self>, ConfigError> {
        let Some(vrid) = i.vrid else {
            let stray = [
                ("--vrrp-priority", i.priority.map(|p| p.to_string())),
                ("--vrrp-advert-int", i.advert_int.clone()),
                ("--vrrp-preempt", i.preempt.map(|p| p.to_string())),
                ("--vrrp-peer", i.peers.first().cloned()),
                (
                    "--vrrp-health-penalty",
                    i.health_penalty.map(|p| p.to_string()),
                ),
                ("--vrrp-version", i.version.map(|v| v.to_string())),
                ("--vrrp-auth-type", i.auth_type.clone()),
                (
                    "--vrrp-auth-pass",
                    i.auth_pass.as_ref().map(|_| HIDDEN.into()),
                ),
                (
                    "--vrrp-track-interface",
                    i.track_interfaces.first().cloned(),
                ),
                (
                    "--notify-exec",
                    i.notify_exec.as_ref().map(|p| p.display().to_string()),
                ),
                (
                    "--notify-fifo",
                    i.notify_fifo.as_ref().map(|p| p.display().to_string()),
                ),
                ("--vrrp-track-ip", i.track_ip.clone()),
                (
                    "--vrrp-track-ip-weight",
                    i.track_ip_weight.map(|w| w.to_string()),
                ),
                (
                    "--vrrp-track-ip-fall",
                    i.track_ip_fall.map(|f| f.to_string()),
                ),
            ];
            if let Some((field, Some(v))) = stray.into_iter().find(|(_, v)| v.is_some()) {
                return Err(invalid(field, v, "needs --vrrp-vrid"));
            }
            return Ok(None);
        };
        let vrid = u8::try_from(vrid)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| invalid("--vrrp-vrid", vrid, "must be in 1-255"))?;
        let priority = match i.priority {
            Some(p) => u8::try_from(p)
                .ok()
                .filter(|p| (1..=254).contains(p))
                .ok_or_else(|| {
                    invalid(
                        "--vrrp-priority",
                        p,
                        "must be in 1-254 (255, the address owner, is not used)",
                    )
                })?,
            None => DEFAULT_PRIORITY,
        };
        let version = match i.version {
            None | Some(3) => Version::V3,
            Some(2) => Version::V2,
            Some(v) => return Err(invalid("--vrrp-version", v, "must be 2 or 3")),
        };
        let advert_interval = match &i.advert_int {
            Some(s) if version == Version::V2 => {
                let d = super::parse::parse_duration("--vrrp-advert-int", s)?;
                if d.subsec_nanos() != 0 || !(1..=255).contains(&d.as_secs()) {
                    return Err(invalid(
                        "--vrrp-advert-int",
                        s,
                        "VRRPv2 advertises whole seconds, 1s to 255s",
                    ));
                }
                d
            }
            None if version == Version::V2 => DEFAULT_V2_ADVERT_INTERVAL,
            Some(s) => {
                let d = super::parse::parse_duration("--vrrp-advert-int", s)?;
                let ms = d.as_secs_f64() * 1e3;
                let cs = (ms / 10.0).round();
                if (ms - cs * 10.0).abs() > 1e-6 {
                    return Err(invalid(
                        "--vrrp-advert-int",
                        s,
                        "must be a multiple of 10ms",
                    ));
                }
                if !(1.0..=f64::from(MAX_ADVER_INT_CS)).contains(&cs) {
                    return Err(invalid(
                        "--vrrp-advert-int",
                        s,
                        "must be between 10ms and 40.95s",
                    ));
                }
                Duration::from_millis(cs as u64 * 10)
            }
            None => DEFAULT_ADVERT_INTERVAL,
        };
        let mut peers = Vec::new();
        for p in &i.peers {
            let ip: IpAddr = p
                .parse()
                .map_err(|_| invalid("--vrrp-peer", p, "not an IPv4 or IPv6 address"))?;
            let broadcast = matches!(ip, IpAddr::V4(a) if a.is_broadcast());
            if ip.is_unspecified() || broadcast || ip.is_multicast() {
                return Err(invalid("--vrrp-peer", p, "not a unicast address"));
            }
            if peers.contains(&ip) {
                return Err(invalid("--vrrp-peer", p, "given twice"));
            }
            peers.push(ip);
        }
        let mut track_interfaces: Vec<String> = Vec::new();
        for t in &i.track_interfaces {
            // IFNAMSIZ is 16 with the NUL; '/' and white space are never in a name.
            if t.is_empty()
                || t.len() > 15
                || t.contains(['/', ':'])
                || t.contains(char::is_whitespace)
            {
                return Err(invalid(
                    "--vrrp-track-interface",
                    t,
                    "not an interface name (1-15 bytes, no '/', ':' or spaces)",
                ));
            }
            if track_interfaces.contains(t) {
                return Err(invalid("--vrrp-track-interface", t, "given twice"));
            }
            track_interfaces.push(t.clone());
        }
        if let Some(p) = &i.notify_exec {
            check_notify_exec(p)?;
        }
        let track_ip = match &i.track_ip {
            Some(s) => {
                let a: std::net::Ipv4Addr = s
                    .parse()
                    .map_err(|_| invalid("--vrrp-track-ip", s, "not an IPv4 address"))?;
                if a.is_unspecified() || a.is_multicast() || a.is_broadcast() {
                    return Err(invalid("--vrrp-track-ip", s, "not a unicast address"));
                }
                Some(a)
            }
            None => None,
        };
        if track_ip.is_none()
            && let Some((f, v)) = [
                ("--vrrp-track-ip-weight", i.track_ip_weight),
                ("--vrrp-track-ip-fall", i.track_ip_fall),
            ]
            .into_iter()
            .find_map(|(f, v)| v.map(|v| (f, v)))
        {
            return Err(invalid(f, v, "needs --vrrp-track-ip"));
        }
        let track_ip_weight = match i.track_ip_weight {
            Some(w) => u8::try_from(w)
                .ok()
                .filter(|w| (1..=253).contains(w))
                .ok_or_else(|| invalid("--vrrp-track-ip-weight", w, "must be in 1-253"))?,
            None => DEFAULT_TRACK_IP_WEIGHT,
        };
        let track_ip_fall = match i.track_ip_fall {
            Some(f) if (1..=100).contains(&f) => f,
            Some(f) => return Err(invalid("--vrrp-track-ip-fall", f, "must be in 1-100")),
            None => DEFAULT_TRACK_IP_FALL,
        };
        if let Some(p) = &i.notify_fifo {
            check_notify_fifo(p)?;
        }
        let health_penalty = match i.health_penalty {
            Some(n) => u8::try_from(n)
                .ok()
                .filter(|n| *n <= 253)
                .ok_or_else(|| invalid("--vrrp-health-penalty", n, "must be in 0-253"))?,
            None => DEFAULT_HEALTH_PENALTY,
        };
        let auth_type = i.auth_type.as_deref().map(str::to_ascii_lowercase);
        let auth = match (auth_type.as_deref(), &i.auth_pass) {
            (Some("ah"), _) => {
                return Err(invalid(
                    "--vrrp-auth-type",
                    "ah",
                    "IPsec AH authentication is not supported (PASS is, with --vrrp-version 2)",
                ));
            }
            (Some(t), _) if !["none", "pass"].contains(&t) => {
                return Err(invalid("--vrrp-auth-type", t, "must be none or pass"));
            }
            (Some("none") | None, None) => Auth::NONE,
            (Some("none"), Some(_)) => {
                return Err(invalid(
                    "--vrrp-auth-type",
                    "none",
                    "contradicts --vrrp-auth-pass",
                ));
            }
            (_, None) => {
                return Err(invalid(
                    "--vrrp-auth-type",
                    "pass",
                    "needs --vrrp-auth-pass",
                ));
            }
            (_, Some(pw)) => {
                if version != Version::V2 {
                    // (VRRPv2, and so PASS, is IPv4 only: the family is checked with the VIPs.)
                    return Err(invalid(
                        "--vrrp-auth-pass",
                        HIDDEN,
                        "PASS authentication exists only in VRRPv2: add --vrrp-version 2",
                    ));
                }
                if pw.0.is_empty() {
                    return Err(invalid("--vrrp-auth-pass", "", "must not be empty"));
                }
                if pw.0.len() > AUTH_LEN {
                    log::warn!(
                        "--vrrp-auth-pass is longer than {} bytes: only the first {} count, as in keepalived",
                        AUTH_LEN,
                        AUTH_LEN
                    );
                }
                Auth::pass(pw.0.as_bytes())
            }
        };
        Ok(Some(Self {
            vrid,
            priority,
            advert_interval,
            preempt: i.preempt.unwrap_or(true),
            peers,
            health_penalty,
            version,
            auth,
            track_interfaces,
            notify_exec: i.notify_exec,
            notify_fifo: i.notify_fifo,
            track_ip,
            track_ip_weight,
            track_ip_fall,
        }))
    }

    /// The priority to advertise: configured, or lowered by the penalty (to at least 1)
    /// while `can_serve` is false.
    pub fn effective_priority(&self, can_serve: bool) -> u8 {
        if can_serve {
            self.priority
        } else {
            self.priority.saturating_sub(self.health_penalty).max(1)
        }
    }

    /// How long a resigning master keeps forwarding after its priority 0 advertisement:
    /// long enough for a backup to wait Skew_Time and send its gratuitous ARP.
    pub fn handover_grace(&self) -> Duration {
        (self.advert_interval * 2).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::args::RunArgs;

    fn input() -> VrrpInput {
        VrrpInput {
            vrid: Some(51),
            ..Default::default()
        }
    }

    #[test]
    fn a_notify_hook_must_be_an_absolute_executable_only_its_owner_may_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("xvip-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hook = dir.join("hook");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        let with = |p: &std::path::Path| {
            VrrpSettings::resolve(VrrpInput {
                notify_exec: Some(p.into()),
                ..input()
            })
        };
        for (mode, why) in [
            (0o644, "not executable"),
            (0o777, "writable by its group or others"),
            (0o775, "writable by its group or others"),
        ] {
            std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = with(&hook).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains("--notify-exec"),
                "{mode:o}: {e}"
            );
        }
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            with(&hook).unwrap().unwrap().notify_exec,
            Some(hook.clone())
        );
        let e = with(std::path::Path::new("hook")).unwrap_err().to_string();
        assert!(e.contains("absolute"), "{e}");
        assert!(with(&dir.join("missing")).is_err());
        assert!(
            with(&dir)
                .unwrap_err()
                .to_string()
                .contains("not a regular file")
        );
        // The FIFO: absent (created at start) or a FIFO, never a plain file.
        let fifo = |p: &std::path::Path| {
            VrrpSettings::resolve(VrrpInput {
                notify_fifo: Some(p.into()),
                ..input()
            })
        };
        assert!(fifo(&dir.join("absent")).is_ok());
        assert!(fifo(&hook).unwrap_err().to_string().contains("not a FIFO"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_witness_is_a_unicast_ipv4_address_with_a_weight_and_a_fall() {
        let s = VrrpSettings::resolve(VrrpInput {
            track_ip: Some("192.0.2.1".into()),
            ..input()
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.track_ip, Some(std::net::Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!((s.track_ip_weight, s.track_ip_fall), (50, 3));
        let bad = |i: VrrpInput| VrrpSettings::resolve(i).unwrap_err().to_string();
        let ip = || Some("192.0.2.1".to_string());
        for (i, want) in [
            (
                VrrpInput {
                    track_ip: Some("gw".into()),
                    ..input()
                },
                "not an IPv4 address",
            ),
            (
                VrrpInput {
                    track_ip: Some("224.0.0.1".into()),
                    ..input()
                },
                "not a unicast",
            ),
            (
                VrrpInput {
                    track_ip: ip(),
                    track_ip_weight: Some(0),
                    ..input()
                },
                "1-253",
            ),
            (
                VrrpInput {
                    track_ip: ip(),
                    track_ip_fall: Some(0),
                    ..input()
                },
                "1-100",
            ),
            (
                VrrpInput {
                    track_ip_weight: Some(20),
                    ..input()
                },
                "needs --vrrp-track-ip",
            ),
        ] {
            let e = bad(i);
            assert!(e.contains(want), "{e}");
        }
    }

    #[test]
    fn tracked_interfaces_are_names_given_once_and_need_a_vrid() {
        let s = VrrpSettings::resolve(VrrpInput {
            track_interfaces: vec!["eth1".into(), "bond0.10".into()],
            ..input()
        })
        .unwrap()
        .unwrap();
        assert_eq!(s.track_interfaces, ["eth1", "bond0.10"]);
        for (bad, why) in [
            ("", "not an interface name"),
            ("a-very-long-name0", "not an interface name"),
            ("eth 1", "not an interface name"),
            ("../x", "not an interface name"),
        ] {
            let e = VrrpSettings::resolve(VrrpInput {
                track_interfaces: vec![bad.into()],
                ..input()
            })
            .unwrap_err();
            assert!(e.to_string().contains(why), "{bad}: {e}");
            assert!(e.to_string().contains("--vrrp-track-interface"), "{e}");
        }
        let e = VrrpSettings::resolve(VrrpInput {
            track_interfaces: vec!["eth1".into(), "eth1".into()],
            ..input()
        })
        .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = VrrpSettings::resolve(VrrpInput {
            track_interfaces: vec!["eth1".into()],
            ..Default::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("needs --vrrp-vrid"), "{e}");
    }

    #[test]
    fn defaults_are_priority_100_every_100ms_with_preempt() {
        let s = VrrpSettings::resolve(input()).unwrap().unwrap();
        assert_eq!(s.priority, 100);
        assert_eq!(s.advert_interval, Duration::from_millis(100));
        assert!(s.preempt);
        assert_eq!(s.health_penalty, 50);
        assert!(s.peers.is_empty());
        assert_eq!(VrrpSettings::resolve(VrrpInput::default()), Ok(None));
    }

    #[test]
    fn every_bad_vrrp_value_is_named() {
        type Case = (fn(&mut VrrpInput), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (|i| i.vrid = Some(0), "--vrrp-vrid", "0"),
            (|i| i.vrid = Some(256), "--vrrp-vrid", "256"),
            (|i| i.priority = Some(255), "--vrrp-priority", "255"),
            (|i| i.priority = Some(0), "--vrrp-priority", "0"),
            (
                |i| i.advert_int = Some("15ms".into()),
                "--vrrp-advert-int",
                "15ms",
            ),
            (
                |i| i.advert_int = Some("41s".into()),
                "--vrrp-advert-int",
                "41s",
            ),
            (
                |i| i.advert_int = Some("5ms".into()),
                "--vrrp-advert-int",
                "5ms",
            ),
            (
                |i| i.peers = vec!["192.0.2.300".into()],
                "--vrrp-peer",
                "192.0.2.300",
            ),
            (
                |i| i.peers = vec!["224.0.0.18".into()],
                "--vrrp-peer",
                "224.0.0.18",
            ),
            (
                |i| i.health_penalty = Some(300),
                "--vrrp-health-penalty",
                "300",
            ),
            (
                |i| {
                    i.vrid = None;
                    i.priority = Some(120);
                },
                "--vrrp-priority",
                "120",
            ),
        ];
        for (mutate, field, value) in cases {
            let mut i = input();
            mutate(&mut i);
            match VrrpSettings::resolve(i) {
                Err(ConfigError::Invalid {
                    field: f, value: v, ..
                }) => {
                    assert_eq!((f, v.as_str()), (field, value));
                }
                other => panic!("{field} {value}: {other:?}"),
            }
        }
    }

    #[test]
    fn intervals_are_whole_centiseconds_up_to_4095() {
        for (s, ms) in [("10ms", 10), ("1s", 1000), ("40.95s", 40950), ("0.1s", 100)] {
            let mut i = input();
            i.advert_int = Some(s.into());
            let v = VrrpSettings::resolve(i).unwrap().unwrap();
            assert_eq!(v.advert_interval, Duration::from_millis(ms), "{s}");
        }
    }

    #[test]
    fn the_penalty_never_goes_below_priority_1() {
        let mut i = input();
        i.priority = Some(30);
        let s = VrrpSettings::resolve(i).unwrap().unwrap();
        assert_eq!(s.effective_priority(true), 30);
        assert_eq!(s.effective_priority(false), 1);
        let s = VrrpSettings { priority: 150, ..s };
        assert_eq!(s.effective_priority(false), 100);
    }

    fn v2(pass: Option<&str>) -> VrrpInput {
        VrrpInput {
            version: Some(2),
            auth_pass: pass.map(|p| Secret(p.into())),
            ..input()
        }
    }

    #[test]
    fn v2_defaults_to_one_second_and_carries_the_pass() {
        let s = VrrpSettings::resolve(v2(Some("42"))).unwrap().unwrap();
        assert_eq!(s.version, Version::V2);
        assert_eq!(s.advert_interval, Duration::from_secs(1));
        assert_eq!(s.auth, Auth::pass(b"42"));
        let s = VrrpSettings::resolve(v2(None)).unwrap().unwrap();
        assert_eq!(s.auth, Auth::NONE);
        let mut i = v2(Some("42"));
        i.auth_type = Some("PASS".into());
        i.advert_int = Some("3s".into());
        let s = VrrpSettings::resolve(i).unwrap().unwrap();
        assert_eq!(s.advert_interval, Duration::from_secs(3));
    }

    #[test]
    fn bad_v2_and_auth_settings_are_named_and_never_show_the_password() {
        type Case = (fn(&mut VrrpInput), &'static str, &'static str);
        let cases: Vec<Case> = vec![
            (|i| i.version = Some(4), "--vrrp-version", "4"),
            (
                |i| i.advert_int = Some("100ms".into()),
                "--vrrp-advert-int",
                "100ms",
            ),
            (
                |i| i.advert_int = Some("1.5s".into()),
                "--vrrp-advert-int",
                "1.5s",
            ),
            (
                |i| i.advert_int = Some("256s".into()),
                "--vrrp-advert-int",
                "256s",
            ),
            (
                |i| i.auth_type = Some("AH".into()),
                "--vrrp-auth-type",
                "ah",
            ),
            (
                |i| i.auth_type = Some("md5".into()),
                "--vrrp-auth-type",
                "md5",
            ),
            (
                |i| i.auth_type = Some("none".into()),
                "--vrrp-auth-type",
                "none",
            ),
            (|i| i.version = Some(3), "--vrrp-auth-pass", HIDDEN),
            (|i| i.version = None, "--vrrp-auth-pass", HIDDEN),
            (
                |i| {
                    i.auth_pass = None;
                    i.auth_type = Some("pass".into());
                },
                "--vrrp-auth-type",
                "pass",
            ),
            (
                |i| i.vrid = None,
                "--vrrp-version",
                "2", // the first stray VRRP setting
            ),
        ];
        for (mutate, field, value) in cases {
            let mut i = v2(Some("sekrit"));
            mutate(&mut i);
            match VrrpSettings::resolve(i) {
                Err(e @ ConfigError::Invalid { .. }) => {
                    let msg = e.to_string();
                    assert!(!msg.contains("sekrit"), "{msg}");
                    let ConfigError::Invalid {
                        field: f, value: v, ..
                    } = e
                    else {
                        unreachable!()
                    };
                    assert_eq!((f, v.as_str()), (field, value), "{msg}");
                }
                other => panic!("{field} {value}: {other:?}"),
            }
        }
        let mut i = v2(Some(""));
        i.auth_type = None;
        assert!(VrrpSettings::resolve(i).is_err(), "empty password");
    }

    #[test]
    fn the_password_is_not_in_debug_output_of_the_settings_or_the_flags() {
        let i = v2(Some("sekrit"));
        let s = VrrpSettings::resolve(i.clone()).unwrap().unwrap();
        let args = crate::config::args::RunArgs {
            vrrp_auth_pass: Some(Secret("sekrit".into())),
            ..Default::default()
        };
        let all = format!("{i:?} {s:?} {args:?}");
        assert!(
            !all.contains("sekrit") && !all.contains("115, 101, 107"),
            "{all}"
        );
    }

    #[test]
    fn version_and_password_come_from_the_toml_file_too() {
        let dir = std::env::temp_dir().join(format!("xvip-vrrp2-toml-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xvip.toml");
        std::fs::write(
            &path,
            "interface = \"eth0\"\nvips = [\"192.0.2.100\"]\nbackends = [\"192.0.2.11\"]\n\
             vrrp_vrid = 51\nvrrp_version = 2\nvrrp_auth_type = \"pass\"\nvrrp_auth_pass = \"42\"\n",
        )
        .unwrap();
        let s = RunArgs {
            config: Some(path),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let v = s.vrrp.unwrap();
        assert_eq!((v.version, v.auth), (Version::V2, Auth::pass(b"42")));
        assert_eq!(v.advert_interval, Duration::from_secs(1));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
