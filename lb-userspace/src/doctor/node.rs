//! Checks of the node itself: kernel version and BTF, bpffs, each interface's driver (native
//! XDP or the generic fallback) and what XDP program is already on it, capabilities.

use std::{io, path::Path};

use super::Finding;
use crate::config::{Announce, Settings, XdpAttachMode};
use crate::dataplane::pins::{
    self, Decision,
    attached::{self, Attached},
};
use crate::net::iface::Interface;

/// Oldest kernel xvip runs on: CAP_BPF and the XDP features it uses.
pub const MIN_KERNEL: (u32, u32) = (5, 8);
/// Oldest kernel with `bpf_get_netns_cookie` in cgroup `connect4` (the local-connect hook).
pub const MIN_KERNEL_LOCAL_CONNECT: (u32, u32) = (5, 14);
use crate::net::sys::BTF_PATH;
/// Where `xvip run` expects (and otherwise mounts) bpffs.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Drivers with native (driver-mode) XDP, by their ethtool name. Not exhaustive: an unknown
/// driver is a warning, not a failure (`--xdp-mode auto` falls back to generic).
pub const NATIVE_XDP_DRIVERS: &[&str] = &[
    "veth",
    "virtio_net",
    "tun",
    "bond",
    "mlx4_en",
    "mlx5_core",
    "ice",
    "i40e",
    "ixgbe",
    "ixgbevf",
    "igb",
    "igc",
    "bnxt_en",
    "ena",
    "gve",
    "hv_netvsc",
    "nfp",
    "qede",
    "sfc",
    "netsec",
    "stmmac",
    "mvneta",
    "mvpp2",
];

/// Capability bits (`linux/capability.h`).
pub const CAP_NET_ADMIN: u32 = 12;
pub const CAP_NET_RAW: u32 = 13;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Every node check, in order.
pub fn checks(s: &Settings) -> Vec<Finding> {
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| cap_eff(&t));
    let mut out = vec![
        kernel(&uname_release(), s.local_connect),
        btf(Path::new(BTF_PATH).exists()),
        bpffs(
            crate::net::sys::is_bpffs(Path::new(BPFFS)),
            caps.is_some_and(|c| has(c, CAP_SYS_ADMIN)),
        ),
    ];
    for name in &s.interfaces {
        match Interface::lookup(name) {
            Ok(iface) => {
                out.push(xdp_driver(name, driver(name).ok().as_deref(), s.xdp_mode));
                out.push(attached_program(s, &iface));
            }
            Err(e) => out.push(Finding::fail(
                "interface",
                e.to_string(),
                "give --interface an existing interface of this network namespace (`ip link`)",
            )),
        }
    }
    out.push(capabilities(caps, s.announce == Announce::Arp));
    out
}

/// The running kernel's release (`uname -r`).
fn uname_release() -> String {
    // SAFETY: uname fills the zeroed struct; release is NUL-terminated.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes into the struct we own.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    // SAFETY: the kernel NUL-terminates the field.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// `6.8.0-45-generic` -> (6, 8).
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The kernel release against what xvip needs.
pub fn kernel(release: &str, local_connect: bool) -> Finding {
    const CHECK: &str = "kernel";
    let Some(v) = parse_release(release) else {
        return Finding::warn(
            CHECK,
            format!("cannot read the kernel version from {release:?}"),
            format!("xvip needs Linux >= {}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
        );
    };
    if v < MIN_KERNEL {
        return Finding::fail(
            CHECK,
            format!(
                "Linux {release}, older than {}.{}",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            format!(
                "upgrade to Linux >= {}.{} (CAP_BPF, XDP)",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
        );
    }
    let (a, b) = MIN_KERNEL_LOCAL_CONNECT;
    if local_connect && v < MIN_KERNEL_LOCAL_CONNECT {
        return Finding::fail(
            CHECK,
            format!("Linux {release}: the local-connect hook needs >= {a}.{b}"),
            format!("upgrade to Linux >= {a}.{b}, or run with --no-local-connect"),
        );
    }
    Finding::ok(CHECK, format!("Linux {release}"))
}

/// Kernel BTF present or not.
pub fn btf(present: bool) -> Finding {
    if present {
        Finding::ok("btf", format!("{BTF_PATH} present"))
    } else {
        Finding::warn(
            "btf",
            format!("no {BTF_PATH} (kernel without CONFIG_DEBUG_INFO_BTF)"),
            "xvip's programs load without it, but bpftool cannot show its maps' types; prefer a kernel built with CONFIG_DEBUG_INFO_BTF=y",
        )
    }
}

/// bpffs on `/sys/fs/bpf`: where the pins live, so flows survive a restart.
pub fn bpffs(mounted: bool, sys_admin: bool) -> Finding {
    let fix =
        format!("mount -t bpf bpf {BPFFS} (systemd does at boot; make it permanent in /etc/fstab)");
    match (mounted, sys_admin) {
        (true, _) => Finding::ok("bpffs", format!("mounted on {BPFFS}")),
        (false, true) => Finding::warn(
            "bpffs",
            format!("not mounted on {BPFFS}: `xvip run` mounts it itself (CAP_SYS_ADMIN)"),
            fix,
        ),
        (false, false) => Finding::fail(
            "bpffs",
            format!("not mounted on {BPFFS}, and without CAP_SYS_ADMIN `xvip run` cannot mount it"),
            fix,
        ),
    }
}

/// The interface's driver (ethtool's `GDRVINFO`: right in any network namespace, unlike
/// `/sys/class/net`, which shows the namespace sysfs was mounted in).
///
/// # Errors
/// The ioctl failed (no such interface, no ethtool support).
pub fn driver(name: &str) -> io::Result<String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GDRVINFO: u32 = 0x3;
    // struct ethtool_drvinfo: cmd, then driver[32] first of its strings; 196 bytes in all.
    let mut info = [0u8; 196];
    info[..4].copy_from_slice(&ETHTOOL_GDRVINFO.to_ne_bytes());
    // struct ifreq: the name, then the union holding `ifr_data`.
    #[repr(C)]
    struct IfreqData {
        name: [u8; libc::IFNAMSIZ],
        data: *mut u8,
        _pad: [u8; 16],
    }
    let mut ifr = IfreqData {
        name: [0; libc::IFNAMSIZ],
        data: info.as_mut_ptr(),
        _pad: [0; 16],
    };
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    ifr.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: a plain datagram socket, owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor we own.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCETHTOOL reads the ifreq and writes at most `info`'s 196 bytes.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            SIOCETHTOOL as _,
            std::ptr::addr_of_mut!(ifr),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let drv = &info[4..36];
    let end = drv.iter().position(|&b| b == 0).unwrap_or(drv.len());
    Ok(String::from_utf8_lossy(&drv[..end]).into_owned())
}

/// Native XDP on the interface, from its driver and the configured attach mode.
pub fn xdp_driver(iface: &str, driver: Option<&str>, mode: XdpAttachMode) -> Finding {
    const CHECK: &str = "xdp-driver";
    let shown = driver.unwrap_or("unknown");
    if mode == XdpAttachMode::Generic {
        return Finding::ok(
            CHECK,
            format!("{iface}: driver {shown}, --xdp-mode generic configured"),
        );
    }
    if driver.is_some_and(|d| NATIVE_XDP_DRIVERS.contains(&d)) {
        return Finding::ok(CHECK, format!("{iface}: driver {shown} has native XDP"));
    }
    let seen = format!("{iface}: driver {shown} is not known to have native XDP");
    match mode {
        XdpAttachMode::Native => Finding::warn(
            CHECK,
            seen,
            "--xdp-mode native fails at start if the driver lacks it: use --xdp-mode auto or generic",
        ),
        _ => Finding::warn(
            CHECK,
            format!("{seen}: --xdp-mode auto may fall back to generic (slower)"),
            "use a NIC whose driver has native XDP for line-rate forwarding, or accept generic mode",
        ),
    }
}

/// The program name the kernel gives `prog_id`, for the line.
fn program_name(prog_id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .and_then(|p| p.name_as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "(unnamed)".into())
}

/// What is attached to the interface, through the same decision `xvip run` makes.
fn attached_program(s: &Settings, iface: &Interface) -> Finding {
    let attached = match attached::attached_xdp(iface.index) {
        Ok(a) => a,
        Err(e) => {
            return Finding::warn(
                "xdp-program",
                format!(
                    "{}: cannot ask the kernel what is attached: {e}",
                    iface.name
                ),
                "run as root (CAP_NET_ADMIN)",
            );
        }
    };
    let link = pins::netns_inode()
        .ok()
        .map(|ns| pins::pin_dir(&s.pin_root, ns, &iface.name).join(pins::LINK_PIN))
        .and_then(|p| attached::read_link(&p).ok().flatten());
    let foreign_link = |a: &Attached| {
        aya::programs::loaded_links()
            .filter_map(Result::ok)
            .find(|l| l.program_id() == a.prog_id)
            .map(|l| l.id())
    };
    xdp_program(
        &iface.name,
        s.attach,
        pins::decide(link, iface.index, &attached),
        |a| program_name(a.prog_id),
        |a| pins::removal_hint(&iface.name, a.mode, foreign_link(a)),
    )
}

/// The finding of `pins::decide`'s decision under `--attach attach`; `name` and `hint`
/// describe a foreign program: in the way of `--attach xdp`, a neighbour to `tc` and `auto`.
pub fn xdp_program(
    iface: &str,
    attach: crate::config::Attach,
    decision: Decision,
    name: impl Fn(&Attached) -> String,
    hint: impl Fn(&Attached) -> String,
) -> Finding {
    const CHECK: &str = "xdp-program";
    match decision {
        Decision::Fresh => Finding::ok(CHECK, format!("{iface}: no XDP program attached")),
        Decision::Adopt => Finding::ok(
            CHECK,
            format!("{iface}: this xvip's program is attached (pinned link; a restart adopts it)"),
        ),
        Decision::DropStale => Finding::ok(
            CHECK,
            format!("{iface}: a defunct pinned link, which `xvip run` removes"),
        ),
        Decision::Foreign(a) if attach != crate::config::Attach::Xdp => Finding::ok(
            CHECK,
            format!(
                "{iface} has XDP program {} (id {}), not this xvip's: with --attach {} xvip runs at tc ingress beside it",
                name(&a),
                a.prog_id,
                attach.name()
            ),
        ),
        Decision::Foreign(a) => Finding::fail(
            CHECK,
            format!(
                "{iface} already has XDP program {} (id {}) attached, not by this xvip",
                name(&a),
                a.prog_id
            ),
            format!(
                "{}, or run beside it with --attach auto (tc ingress, same tables)",
                hint(&a)
            ),
        ),
        Decision::Elsewhere(l) => Finding::fail(
            CHECK,
            format!(
                "{iface}: the pinned XDP link (program id {}) is attached to ifindex {}",
                l.prog_id, l.ifindex
            ),
            format!("`xvip detach --interface {iface}` removes those pins"),
        ),
    }
}

/// `CapEff` of a `/proc/PID/status`.
pub fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn has(caps: u64, bit: u32) -> bool {
    caps & (1 << bit) != 0
}

/// The capabilities `xvip run` needs against the effective set `caps`.
pub fn capabilities(caps: Option<u64>, raw_sockets: bool) -> Finding {
    const CHECK: &str = "capabilities";
    let Some(c) = caps else {
        return Finding::warn(
            CHECK,
            "cannot read CapEff from /proc/self/status",
            "xvip needs CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_NET_RAW",
        );
    };
    let sys_admin = has(c, CAP_SYS_ADMIN);
    let mut missing = Vec::new();
    for (bit, name) in [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_NET_RAW, "CAP_NET_RAW"),
    ] {
        // CAP_SYS_ADMIN covers the BPF ones on every kernel; raw sockets only with ARP/VRRP.
        let covered = match bit {
            CAP_BPF | CAP_PERFMON => sys_admin,
            CAP_NET_RAW => !raw_sockets,
            _ => false,
        };
        if !has(c, bit) && !covered {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Finding::ok(CHECK, format!("CapEff {c:#x} has what xvip needs"));
    }
    Finding::fail(
        CHECK,
        format!("CapEff {c:#x} lacks {}", missing.join(", ")),
        "run as root, or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_NET_RAW (`xvip manifest` does)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::pins::attached::LinkState;

    #[test]
    fn kernel_releases_are_read_and_judged() {
        assert_eq!(parse_release("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(parse_release("5.15.167.4-microsoft"), Some((5, 15)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(
            kernel("6.18.44-fc", true).line(),
            "ok   kernel: Linux 6.18.44-fc"
        );
        assert!(
            kernel("5.4.0", false)
                .line()
                .starts_with("fail kernel: Linux 5.4.0, older than 5.8")
        );
        let f = kernel("5.10.0", true);
        assert_eq!(f.level, super::super::Level::Fail);
        assert!(f.fix.contains("--no-local-connect"), "{}", f.fix);
        assert_eq!(kernel("5.10.0", false).level, super::super::Level::Ok);
        assert_eq!(kernel("x", false).level, super::super::Level::Warn);
    }

    #[test]
    fn missing_btf_is_a_warning() {
        assert_eq!(btf(true).level, super::super::Level::Ok);
        assert_eq!(btf(false).level, super::super::Level::Warn);
    }

    #[test]
    fn unmounted_bpffs_fails_only_when_xvip_could_not_mount_it() {
        use super::super::Level;
        assert_eq!(bpffs(true, false).level, Level::Ok);
        assert_eq!(bpffs(false, true).level, Level::Warn);
        let f = bpffs(false, false);
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.fix.starts_with("mount -t bpf bpf /sys/fs/bpf"),
            "{}",
            f.fix
        );
    }

    #[test]
    fn drivers_without_known_native_xdp_are_warnings() {
        use super::super::Level;
        let f = xdp_driver("eth0", Some("veth"), XdpAttachMode::Auto);
        assert_eq!(
            f.line(),
            "ok   xdp-driver: eth0: driver veth has native XDP"
        );
        let f = xdp_driver("eth0", Some("r8169"), XdpAttachMode::Auto);
        assert_eq!(f.level, Level::Warn);
        assert!(f.seen.contains("driver r8169 is not known"), "{}", f.seen);
        let f = xdp_driver("eth0", None, XdpAttachMode::Native);
        assert!(f.fix.contains("--xdp-mode auto"), "{}", f.fix);
        assert_eq!(
            xdp_driver("eth0", Some("r8169"), XdpAttachMode::Generic).level,
            Level::Ok
        );
    }

    #[test]
    fn a_foreign_program_fails_xdp_with_its_name_id_and_removal_and_is_a_neighbour_to_tc() {
        use crate::config::Attach;
        let a = Attached {
            prog_id: 42,
            mode: 1,
        };
        let f = xdp_program(
            "eth0",
            Attach::Xdp,
            pins::decide(None, 3, &[a]),
            |_| "xdp_fw".into(),
            |a| pins::removal_hint("eth0", a.mode, None),
        );
        assert_eq!(
            f.line(),
            "fail xdp-program: eth0 already has XDP program xdp_fw (id 42) attached, not by this xvip; fix: remove it with `ip link set dev eth0 xdpdrv off`, or run beside it with --attach auto (tc ingress, same tables)"
        );
        for attach in [Attach::Auto, Attach::Tc] {
            let f = xdp_program(
                "eth0",
                attach,
                pins::decide(None, 3, &[a]),
                |_| "xdp_fw".into(),
                |_| unreachable!(),
            );
            assert_eq!(
                f.line(),
                format!(
                    "ok   xdp-program: eth0 has XDP program xdp_fw (id 42), not this xvip's: with --attach {} xvip runs at tc ingress beside it",
                    attach.name()
                )
            );
        }
        let ours = LinkState {
            id: 7,
            prog_id: 42,
            link_type: 6,
            ifindex: 3,
        };
        let f = xdp_program(
            "eth0",
            Attach::Xdp,
            pins::decide(Some(ours), 3, &[a]),
            |_| unreachable!(),
            |_| unreachable!(),
        );
        assert_eq!(f.level, super::super::Level::Ok);
        let f = xdp_program(
            "eth0",
            Attach::Auto,
            pins::decide(None, 3, &[]),
            |_| unreachable!(),
            |_| unreachable!(),
        );
        assert_eq!(f.line(), "ok   xdp-program: eth0: no XDP program attached");
    }

    #[test]
    fn capabilities_name_what_is_missing() {
        use super::super::Level;
        let status = "Name:\txvip\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(capabilities(cap_eff(status), true).level, Level::Ok);
        let four = 1 << CAP_BPF | 1 << CAP_PERFMON | 1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW;
        assert_eq!(capabilities(Some(four), true).level, Level::Ok);
        let f = capabilities(Some(1 << CAP_NET_ADMIN), true);
        assert_eq!(f.level, Level::Fail);
        assert!(
            f.seen.ends_with("lacks CAP_BPF, CAP_PERFMON, CAP_NET_RAW"),
            "{}",
            f.seen
        );
        let sys_admin = 1 << CAP_SYS_ADMIN | 1 << CAP_NET_ADMIN;
        assert_eq!(capabilities(Some(sys_admin), false).level, Level::Ok);
        assert_eq!(capabilities(None, true).level, Level::Warn);
    }
}
