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
}

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
