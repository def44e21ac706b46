//! The TOML file (`--config`): the same settings, named as the flags with `_` for `-`,
//! unknown keys refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::vrrp;
use super::{Announce, Attach, ConfigError, HealthKind, Mode, XdpAttachMode};

/// The TOML file: the same settings, named as the flags with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub(super) interface: Option<OneOrMany>,
    pub(super) vips: Option<Vec<String>>,
    pub(super) backends: Option<Vec<String>>,
    pub(super) mode: Option<Mode>,
    pub(super) snat_ip: Option<String>,
    pub(super) snat_ports: Option<String>,
    pub(super) health: Option<HealthKind>,
    pub(super) health_path: Option<String>,
    pub(super) health_interval: Option<String>,
    pub(super) health_timeout: Option<String>,
    pub(super) rise: Option<u32>,
    pub(super) fall: Option<u32>,
    pub(super) passive_errors: Option<u32>,
    pub(super) passive_timeout: Option<String>,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
    pub(super) insecure_skip_verify: Option<bool>,
    pub(super) metrics_addr: Option<String>,
    pub(super) xdp_mode: Option<XdpAttachMode>,
    pub(super) attach: Option<Attach>,
    pub(super) keep_attached: Option<bool>,
    pub(super) table_size: Option<u32>,
    pub(super) conntrack_size: Option<u32>,
    pub(super) garp_interval: Option<String>,
    pub(super) pin_root: Option<PathBuf>,
    pub(super) no_icmp_echo: Option<bool>,
    pub(super) no_local_connect: Option<bool>,
    pub(super) vrrp_vrid: Option<u32>,
    pub(super) vrrp_priority: Option<u32>,
    pub(super) vrrp_advert_int: Option<String>,
    pub(super) vrrp_preempt: Option<bool>,
    pub(super) vrrp_peers: Option<Vec<String>>,
    pub(super) vrrp_health_penalty: Option<u32>,
    pub(super) vrrp_version: Option<u32>,
    pub(super) vrrp_auth_type: Option<String>,
    pub(super) vrrp_auth_pass: Option<vrrp::Secret>,
    pub(super) vrrp_track_interfaces: Option<Vec<String>>,
    pub(super) notify_exec: Option<PathBuf>,
    pub(super) notify_fifo: Option<PathBuf>,
    pub(super) vrrp_track_ip: Option<String>,
    pub(super) vrrp_track_ip_weight: Option<u32>,
    pub(super) vrrp_track_ip_fall: Option<u32>,
    pub(super) discover_from_kubeconfig: Option<PathBuf>,
    pub(super) sync_key_file: Option<PathBuf>,
    pub(super) control_plane_endpoint: Option<String>,
    pub(super) announce: Option<Announce>,
    pub(super) route_table: Option<u32>,
    pub(super) services: Option<super::services::ServicesFile>,
}

/// `interface = "eth0"` or `interface = ["eth0", "eth1"]` in the TOML file.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

pub(super) fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    toml::from_str(&text).map_err(|e| {
        // One line that names the setting: the offending line of the file, then the reason.
        let at = e.span().map(|sp| {
            let line_no = text[..sp.start].matches('\n').count() + 1;
            let line = text.lines().nth(line_no - 1).unwrap_or("").trim();
            format!(" line {line_no} ({line})")
        });
        ConfigError::File {
            path: format!("{}{}", path.display(), at.unwrap_or_default()),
            reason: e.message().to_string(),
        }
    })
}

/// Bounded fuzzing of the config file: whatever an operator (or a broken template) writes.
#[cfg(test)]
mod fuzz_tests {

    use crate::config::args::RunArgs;
    use crate::fuzz::Rng;

    const VALID: &str = r#"interface = "eth0"
vips = ["192.0.2.100", "192.0.2.101:443"]
backends = ["192.0.2.11", "192.0.2.12:6443@2", "192.0.2.13@0"]
mode = "fullnat"
snat_ports = "20000-29999"
health_interval = "200ms"
fall = 3
rise = 2
metrics_addr = "127.0.0.1:9106"
"#;

    #[test]
    fn random_mutated_and_truncated_files_give_settings_or_one_clean_line() {
        let dir = std::env::temp_dir().join(format!("xvip-cfg-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("xvip.toml");
        let interesting: &[&[u8]] = &[
            b"\"",
            b"[",
            b"]",
            b"=",
            b"\n",
            b"#",
            b"@",
            b":",
            b"-",
            b"99999999999999999999",
            b"-1",
            b"0",
            b"\"\xc3\xa9\"",
            b"\xff",
            b"'''",
            b"{}",
            b"nan",
            b"1e400",
            b"\"999.1.1.1\"",
            b"\"192.0.2.11:0@4294967296\"",
            b"\"5ms\"",
            b"\"1h1m\"",
        ];
        let mut rng = Rng::new(0xc0f1);
        let (mut ok, mut err) = (0, 0);
        for case in 0..600 {
            let text = match case % 4 {
                0 => VALID.as_bytes()[..rng.below(VALID.len() + 1)].to_vec(),
                _ => rng.mutate(VALID.as_bytes(), interesting),
            };
            std::fs::write(&path, &text).unwrap();
            let args = RunArgs {
                config: Some(path.clone()),
                ..Default::default()
            };
            match args.resolve() {
                Ok(_) => ok += 1,
                Err(e) => {
                    err += 1;
                    let line = e.to_string();
                    assert!(
                        !line.is_empty() && !line.contains('\n'),
                        "case {case}: {line:?} for {:?}",
                        String::from_utf8_lossy(&text)
                    );
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ok > 10 && err > 100, "{ok} ok, {err} errors");
    }
}
