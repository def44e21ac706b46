//! kube-proxy's configuration, from its `kube-system/kube-proxy` ConfigMap (kubeadm's,
//! `config.conf` inside) when a kubeconfig is given: in IPVS mode, kube-proxy answers ARP
//! for the addresses it holds unless `ipvs.strictARP` is set, and it cleans up IPVS
//! addresses it does not know unless they are in `ipvs.excludeCIDRs` (kube-vip#745).

use std::net::IpAddr;

use serde::Deserialize;

use super::Finding;
use crate::config::Settings;

/// The ConfigMap kubeadm writes kube-proxy's configuration into.
pub const CONFIGMAP_PATH: &str = "/api/v1/namespaces/kube-system/configmaps/kube-proxy";

const CHECK: &str = "kube-proxy";

/// The parts of a `KubeProxyConfiguration` that matter to a VIP.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct KubeProxyConfig {
    /// `iptables` (the default when empty), `ipvs`, `nftables`.
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub ipvs: Ipvs,
}

/// `ipvs:` of a `KubeProxyConfiguration`.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Ipvs {
    #[serde(default, rename = "strictARP")]
    pub strict_arp: bool,
    #[serde(default, rename = "excludeCIDRs")]
    pub exclude_cidrs: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ConfigMap {
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
}

/// The configuration inside a ConfigMap answer (JSON, `data."config.conf"` YAML).
///
/// # Errors
/// What does not parse, in one line.
pub fn parse(body: &[u8]) -> Result<KubeProxyConfig, String> {
    configmap_yaml(body, "config.conf")
}

/// Whether `cidr` (`ADDR/LEN`) holds `ip`.
fn cidr_holds(cidr: &str, ip: IpAddr) -> bool {
    let Some((net, len)) = cidr.trim().split_once('/') else {
        return cidr.trim().parse::<IpAddr>() == Ok(ip);
    };
    let (Ok(net), Ok(len)) = (net.parse::<IpAddr>(), len.parse::<u32>()) else {
        return false;
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) if len <= 32 => {
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) if len <= 128 => {
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// The verdict on kube-proxy's configuration (`Ok(None)`: no such ConfigMap).
pub fn decide(read: Result<Option<KubeProxyConfig>, String>, vips: &[IpAddr]) -> Finding {
    let cfg = match read {
        Err(e) => {
            return Finding::warn(
                CHECK,
                format!("cannot read the kube-proxy ConfigMap: {e}"),
                "check kube-proxy's mode, ipvs.strictARP and ipvs.excludeCIDRs by hand (kubectl -n kube-system get configmap kube-proxy -o yaml)",
            );
        }
        Ok(None) => {
            return Finding::ok(CHECK, "no kube-system/kube-proxy ConfigMap");
        }
        Ok(Some(c)) => c,
    };
    if cfg.mode != "ipvs" {
        let mode = if cfg.mode.is_empty() {
            "iptables (default)"
        } else {
            cfg.mode.as_str()
        };
        return Finding::ok(
            CHECK,
            format!("mode {mode}: kube-proxy holds no service address on an interface"),
        );
    }
    let excluded = cfg.ipvs.exclude_cidrs.clone().unwrap_or_default();
    let missing: Vec<String> = vips
        .iter()
        .filter(|v| !excluded.iter().any(|c| cidr_holds(c, **v)))
        .map(|v| match v {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        })
        .collect();
    let mut wrong = Vec::new();
    let mut fixes = Vec::new();
    if !cfg.ipvs.strict_arp {
        wrong.push("ipvs.strictARP is false (kube-proxy answers ARP for its service addresses on every interface)".to_string());
        fixes.push("set ipvs.strictARP: true".to_string());
    }
    if !missing.is_empty() {
        wrong.push(format!(
            "ipvs.excludeCIDRs lacks {} (its IPVS cleanup may remove the VIP)",
            missing.join(", ")
        ));
        fixes.push(format!("add {} to ipvs.excludeCIDRs", missing.join(", ")));
    }
    if wrong.is_empty() {
        return Finding::ok(
            CHECK,
            "mode ipvs with strictARP and the VIPs in excludeCIDRs",
        );
    }
    Finding::warn(
        CHECK,
        format!("mode ipvs: {}", wrong.join("; ")),
        format!(
            "{} in the kube-proxy ConfigMap (kubectl -n kube-system edit configmap kube-proxy), then restart kube-proxy",
            fixes.join(" and ")
        ),
    )
}

/// A ConfigMap's answer through the kubeconfig `path`, from the masters of `s` (`None`:
/// there is no such ConfigMap).
///
/// # Errors
/// What failed (the kubeconfig, the request), in one line.
pub async fn configmap(
    s: &Settings,
    path: &std::path::Path,
    object: &str,
) -> Result<Option<Vec<u8>>, String> {
    let access =
        crate::control::discovery::kubeconfig::load_kubeconfig(path).map_err(|e| e.to_string())?;
    let candidates = super::master_addrs(s);
    crate::control::discovery::client::get_object(&access, &candidates, object)
        .await
        .map(|body| body.map(|b| b.to_vec()))
        .map_err(|e| e.to_string())
}

/// The YAML document `data.FIELD` of a ConfigMap answer.
///
/// # Errors
/// What does not parse, in one line.
pub fn configmap_yaml<T: serde::de::DeserializeOwned>(
    body: &[u8],
    field: &str,
) -> Result<T, String> {
    let cm: ConfigMap =
        serde_json::from_slice(body).map_err(|e| format!("not a ConfigMap: {e}"))?;
    let conf = cm
        .data
        .get(field)
        .ok_or_else(|| format!("the ConfigMap has no {field}"))?;
    serde_yaml_ng::from_str(conf).map_err(|e| format!("{field}: {e}"))
}

/// The check, when `--discover-from-kubeconfig` names a kubeconfig (else none).
pub async fn checks(s: &Settings) -> Vec<Finding> {
    let Some(path) = &s.discover_from_kubeconfig else {
        return Vec::new();
    };
    let vips = super::vips(s);
    let read = async {
        match configmap(s, path, CONFIGMAP_PATH).await? {
            Some(body) => parse(&body).map(Some),
            None => Ok(None),
        }
    };
    vec![decide(read.await, &vips)]
}

#[cfg(test)]
mod tests {
    use super::super::Level;
    use super::*;

    fn configmap(conf: &str) -> Vec<u8> {
        serde_json::json!({"kind": "ConfigMap", "data": {"config.conf": conf}})
            .to_string()
            .into_bytes()
    }

    const KUBEADM_IPVS: &str = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nbindAddress: 0.0.0.0\nipvs:\n  excludeCIDRs: null\n  minSyncPeriod: 0s\n  scheduler: \"\"\n  strictARP: false\nmode: ipvs\n";

    fn vip() -> Vec<IpAddr> {
        vec!["192.0.2.100".parse().unwrap()]
    }

    #[test]
    fn kubeadms_ipvs_configuration_warns_for_strict_arp_and_the_excluded_vip() {
        let cfg = parse(&configmap(KUBEADM_IPVS)).unwrap();
        assert_eq!(cfg.mode, "ipvs");
        let f = decide(Ok(Some(cfg)), &vip());
        assert_eq!(f.level, Level::Warn);
        assert_eq!(
            f.line(),
            "warn kube-proxy: mode ipvs: ipvs.strictARP is false (kube-proxy answers ARP for its service addresses on every interface); ipvs.excludeCIDRs lacks 192.0.2.100/32 (its IPVS cleanup may remove the VIP); fix: set ipvs.strictARP: true and add 192.0.2.100/32 to ipvs.excludeCIDRs in the kube-proxy ConfigMap (kubectl -n kube-system edit configmap kube-proxy), then restart kube-proxy"
        );
    }

    #[test]
    fn strict_arp_with_the_vip_excluded_and_other_modes_pass() {
        let fixed = KUBEADM_IPVS
            .replace("excludeCIDRs: null", "excludeCIDRs: [\"192.0.2.96/28\"]")
            .replace("strictARP: false", "strictARP: true");
        let f = decide(Ok(Some(parse(&configmap(&fixed)).unwrap())), &vip());
        assert_eq!(f.level, Level::Ok, "{f:?}");
        for (mode, seen) in [
            ("mode: \"\"\n", "iptables (default)"),
            ("mode: nftables\n", "nftables"),
        ] {
            let f = decide(Ok(Some(parse(&configmap(mode)).unwrap())), &vip());
            assert_eq!(f.level, Level::Ok);
            assert!(f.seen.contains(seen), "{f:?}");
        }
        assert_eq!(decide(Ok(None), &vip()).level, Level::Ok);
    }

    #[test]
    fn an_unreadable_configmap_warns_and_bad_answers_are_one_line_errors() {
        assert_eq!(decide(Err("x".into()), &vip()).level, Level::Warn);
        assert!(parse(b"{").unwrap_err().starts_with("not a ConfigMap"));
        assert_eq!(
            parse(br#"{"data":{}}"#).unwrap_err(),
            "the ConfigMap has no config.conf"
        );
        assert!(
            parse(&configmap("mode: ["))
                .unwrap_err()
                .starts_with("config.conf:")
        );
    }

    #[test]
    fn cidrs_hold_addresses_of_their_family_only() {
        let v4: IpAddr = "192.0.2.100".parse().unwrap();
        let v6: IpAddr = "2001:db8::100".parse().unwrap();
        assert!(cidr_holds("192.0.2.0/24", v4));
        assert!(cidr_holds("0.0.0.0/0", v4));
        assert!(cidr_holds("192.0.2.100", v4));
        assert!(!cidr_holds("192.0.2.128/25", v4));
        assert!(!cidr_holds("192.0.2.0/33", v4));
        assert!(cidr_holds("2001:db8::/32", v6));
        assert!(!cidr_holds("192.0.2.0/24", v6));
        assert!(!cidr_holds("nonsense", v4));
    }
}
