//! The system tools the namespace lab starts, installed from Debian's packages when missing
//! (the lab needs root anyway), so `cargo xtask demo` and `cargo xtask test` work on a fresh
//! machine with nothing installed by hand.

use std::{path::Path, process::Command};

use anyhow::{Context, Result, bail};

/// (command, Debian package) pairs the demo needs.
pub const DEMO: &[(&str, &str)] = &[("ip", "iproute2"), ("ethtool", "ethtool"), ("curl", "curl")];
/// ... and what the tests need on top (VRRP interop, kubectl, nsenter/setpriv, a packet
/// crafter for the blind RST sweep, BIRD as the routed-mode lab's BGP router and nodes,
/// ping for ICMPv6 echo through the IPv6 VIP, xdp-loader as a neighbour on the interface).
pub const TEST: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("curl", "curl"),
    ("keepalived", "keepalived"),
    ("kubectl", "kubernetes-client"),
    ("nsenter", "util-linux"),
    ("setpriv", "util-linux"),
    ("hping3", "hping3"),
    ("bird", "bird2"),
    ("ping", "iputils-ping"),
    ("nft", "nftables"),
    ("xdp-loader", "xdp-tools"),
];
/// ... what `dist` builds and checks the packages with.
pub const DIST: &[(&str, &str)] = &[
    ("dpkg-deb", "dpkg"),
    ("tar", "tar"),
    ("gzip", "gzip"),
    ("chroot", "coreutils"),
    ("git", "git"),
];
/// ... and what the benchmarks compare against.
pub const BENCH: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("ethtool", "ethtool"),
    ("curl", "curl"),
    ("nft", "nftables"),
    ("trafgen", "netsniff-ng"),
    ("haproxy", "haproxy"),
    ("bpftool", "bpftool"),
    // The `peers` part builds Katran's XDP balancer (and gcc names the include triplet).
    ("clang", "clang"),
    ("gcc", "gcc"),
];

fn on_path(cmd: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(Into::into))
        .any(|d| Path::new(&d).join(cmd).is_file())
}

/// Installs the packages of the missing commands with apt-get.
///
/// # Errors
/// When something is missing and cannot be installed (not root, no apt-get, apt failed).
pub fn ensure(needed: &[(&str, &str)]) -> Result<()> {
    let mut missing: Vec<&str> = needed
        .iter()
        .filter(|(cmd, _)| !on_path(cmd))
        .map(|(_, pkg)| *pkg)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 || !on_path("apt-get") {
        bail!(
            "missing Debian packages: {} (install them as root)",
            missing.join(" ")
        );
    }
    eprintln!("xtask: installing {}", missing.join(" "));
    let apt = |args: &[&str]| -> Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    apt(&args)
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
