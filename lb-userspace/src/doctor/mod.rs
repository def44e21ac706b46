//! `xvip doctor`: the node and the masters checked with the settings of `xvip run`, before
//! anything breaks. Reads only: nothing is attached, no map, route, address or announcement
//! is made. Each check is a small function returning a [`Finding`]; they are grouped by what
//! they look at: `node` (kernel, bpffs, the interface's XDP, capabilities), `vip` (the VIP
//! on this node, on `kube-ipvs0`, answered on the segment), `sysctl` (SNAT ports, rp_filter)
//! `masters` (`/readyz`, the serving certificate), `vrrp` (other routers' advertisements
//! on our VRID), `peers` (which nodes of the group reach this one, heard meanwhile) and
//! `kube_proxy` (its ConfigMap, with a kubeconfig), `services` (the Service pools against
//! the VIPs, the SNAT address, the masters and this node's addresses).

pub mod kube_proxy;
pub mod masters;
pub mod node;
pub mod peers;
pub mod services;
pub mod sysctl;
pub mod vip;
pub mod vrrp;

use serde::Serialize;

use crate::config::{Settings, args::RunArgs};
use crate::daemon::DaemonError;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Works, but worse than it could (a fallback, a risk); exit status stays 0.
    Warn,
    /// `xvip run` will fail or the VIP will not work: exit status 1.
    Fail,
}

impl Level {
    /// The word printed at the start of the line.
    pub fn word(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        }
    }
}

/// The outcome of one check: what was looked at, what was seen, and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The check's name, e.g. `vip-arp`.
    pub check: &'static str,
    pub level: Level,
    /// What was seen.
    pub seen: String,
    /// What to do about it (empty when nothing is to be done).
    pub fix: String,
}

impl Finding {
    /// A passed check.
    pub fn ok(check: &'static str, seen: impl Into<String>) -> Self {
        Self::new(check, Level::Ok, seen, "")
    }

    /// A warning with its fix.
    pub fn warn(check: &'static str, seen: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Level::Warn, seen, fix)
    }

    /// A failure with its fix.
    pub fn fail(check: &'static str, seen: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(check, Level::Fail, seen, fix)
    }

    fn new(
        check: &'static str,
        level: Level,
        seen: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            check,
            level,
            seen: seen.into(),
            fix: fix.into(),
        }
    }

    /// One line: `LEVEL CHECK: SEEN`, then `; fix: FIX` when there is one.
    pub fn line(&self) -> String {
        let mut s = format!("{:<4} {}: {}", self.level.word(), self.check, self.seen);
        if !self.fix.is_empty() {
            s.push_str("; fix: ");
            s.push_str(&self.fix);
        }
        s
    }
}

/// Every finding of one run, in the order the checks ran.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// The worst level seen (`Ok` for an empty report).
    pub fn worst(&self) -> Level {
        self.findings
            .iter()
            .map(|f| f.level)
            .max()
            .unwrap_or(Level::Ok)
    }

    /// The process exit status: 1 when any check failed, else 0 (2, bad configuration, is
    /// decided before any check runs).
    pub fn exit_code(&self) -> u8 {
        match self.worst() {
            Level::Fail => 1,
            Level::Ok | Level::Warn => 0,
        }
    }

    /// One line per finding.
    pub fn to_text(&self) -> String {
        self.findings.iter().map(|f| f.line() + "\n").collect()
    }

    /// `{"findings": [...], "worst": "...", "exit": N}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "findings": self.findings,
            "worst": self.worst(),
            "exit": self.exit_code(),
        })
        .to_string()
    }
}

/// Every VIP of `s`, IPv4 then IPv6.
fn vips(s: &Settings) -> Vec<std::net::IpAddr> {
    let v4 = s.vips.iter().map(|v| std::net::IpAddr::V4(v.addr));
    v4.chain(s.vips6.iter().map(|v| std::net::IpAddr::V6(v.addr)))
        .collect()
}

/// Every configured master of `s` (`--backend`), IPv4 then IPv6.
fn master_addrs(s: &Settings) -> Vec<std::net::SocketAddr> {
    let v4 = s.backends.iter().map(|b| std::net::SocketAddr::V4(b.addr));
    v4.chain(s.backends6.iter().map(|b| std::net::SocketAddr::V6(b.addr)))
        .collect()
}

/// Resolves the settings as `xvip run` does and runs every check.
///
/// # Errors
/// [`DaemonError`] for bad configuration or unusable TLS files (exit status 2): nothing is
/// checked then.
pub async fn run(args: &RunArgs) -> Result<Report, DaemonError> {
    let s = args.resolve()?;
    let health = crate::daemon::health_settings(&s)?;
    Ok(Report {
        findings: checks(&s, &health).await,
    })
}

async fn checks(s: &Settings, health: &crate::control::health::HealthSettings) -> Vec<Finding> {
    let mut out = node::checks(s);
    out.extend(vip::checks(s).await);
    out.extend(sysctl::checks(s));
    out.extend(masters::checks(s, health).await);
    out.extend(kube_proxy::checks(s).await);
    let locals = vip::local_addrs();
    out.extend(services::checks(s, &locals));
    let locals: Vec<_> = locals.into_iter().map(|l| l.addr).collect();
    out.extend(vrrp::checks(s, &locals).await);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(levels: &[Level]) -> Report {
        Report {
            findings: levels
                .iter()
                .map(|&level| Finding::new("x", level, "seen", "fix"))
                .collect(),
        }
    }

    #[test]
    fn a_line_has_the_level_the_check_what_was_seen_and_the_fix() {
        assert_eq!(
            Finding::fail(
                "vip-arp",
                "192.0.2.100 answered by 02:00:00:00:00:0b",
                "free it"
            )
            .line(),
            "fail vip-arp: 192.0.2.100 answered by 02:00:00:00:00:0b; fix: free it"
        );
        assert_eq!(
            Finding::ok("bpffs", "mounted").line(),
            "ok   bpffs: mounted"
        );
    }

    #[test]
    fn exit_status_is_one_only_when_a_check_failed() {
        assert_eq!(report(&[]).exit_code(), 0);
        assert_eq!(report(&[Level::Ok, Level::Warn]).exit_code(), 0);
        assert_eq!(
            report(&[Level::Ok, Level::Fail, Level::Warn]).exit_code(),
            1
        );
        assert_eq!(report(&[Level::Warn]).worst(), Level::Warn);
    }

    #[test]
    fn json_carries_every_finding_the_worst_level_and_the_exit_status() {
        let v: serde_json::Value = serde_json::from_str(&report(&[Level::Warn]).to_json()).unwrap();
        assert_eq!(v["worst"], "warn");
        assert_eq!(v["exit"], 0);
        assert_eq!(v["findings"][0]["level"], "warn");
        assert_eq!(v["findings"][0]["check"], "x");
        assert_eq!(v["findings"][0]["fix"], "fix");
    }
}
