//! Where an interface's pins live and whether pinned state belongs to it. Pins are keyed by
//! network namespace and interface name (`<pin-root>/<netns inode>/<ifname>`), and a pinned
//! XDP link is adopted only when the kernel says it is the one attached to this very
//! interface; a link whose interface is gone is dropped with its maps. With several
//! interfaces, the maps and every link are pinned in the first interface's directory (the
//! others' links as `link@IFNAME`).

use std::{
    io,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use crate::net::iface::Interface;

pub mod attached;
pub mod lock;

use self::attached::{Attached, LinkState, attached_xdp, read_link};

/// File name of the pinned XDP link inside an interface's pin directory.
pub const LINK_PIN: &str = "link";
/// File name of the pinned tcx link (`--attach tc`) beside it.
pub const TC_LINK_PIN: &str = "tc";
/// `BPF_LINK_TYPE_XDP` in `bpf_link_info.type`.
const BPF_LINK_TYPE_XDP: u32 = 6;
/// `BPF_LINK_TYPE_TCX`: its `bpf_link_info` union starts with the ifindex, as XDP's does.
const BPF_LINK_TYPE_TCX: u32 = 11;

/// Where the program runs on the interface, once `--attach` is decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// XDP.
    Xdp,
    /// tc ingress, beside whatever holds XDP.
    Tc,
}

/// Where `--attach auto` puts the program, from the XDP decision for the interface: tc
/// when a program that is not this xvip's holds XDP, else XDP. Pure.
pub fn auto_placement(decision: Decision) -> Placement {
    match decision {
        Decision::Foreign(_) => Placement::Tc,
        _ => Placement::Xdp,
    }
}

/// Errors about pinned state and programs already on the interface.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// Another XDP program is attached to the interface.
    #[error(
        "{interface} already has XDP program {name} (id {prog_id}) attached, not by this xvip: {how}, or run beside it with --attach auto (or tc)"
    )]
    ForeignProgram {
        interface: String,
        name: String,
        prog_id: u32,
        how: String,
    },
    /// The pinned link under this interface's key is attached to something else.
    #[error(
        "the pinned XDP link in {dir} is attached to ifindex {ifindex} (program id {prog_id}), not to {interface} (ifindex {expected}); `xvip detach --interface {interface}` removes those pins"
    )]
    Elsewhere {
        dir: String,
        interface: String,
        ifindex: u32,
        expected: u32,
        prog_id: u32,
    },
    /// The link pin exists but is not a readable XDP link.
    #[error(
        "{path} is not an XDP link xvip can use ({reason}); `xvip detach --interface {interface}` removes those pins"
    )]
    Unreadable {
        path: String,
        interface: String,
        reason: String,
    },
    /// The interface's XDP attachment could not be read.
    #[error("cannot tell which XDP program is on {interface}: {reason}")]
    Query { interface: String, reason: String },
    /// This process's network namespace could not be identified.
    #[error("cannot identify this network namespace (/proc/self/ns/net): {0}")]
    Netns(io::Error),
    /// Another xvip serves the interface and did not stop within the wait.
    #[error(
        "{interface} is served by another xvip (pid {pid}, lock {path}), which did not stop within {waited:?}: stop it first (one xvip per interface)"
    )]
    Running {
        interface: String,
        /// As written in the lock file by its holder; `unknown` while it had not written it.
        pid: String,
        path: String,
        waited: std::time::Duration,
    },
}

impl PinError {
    /// 2 for state the operator has to clear, 1 for a failed query.
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Query { .. } | Self::Netns(_) => 1,
            _ => 2,
        }
    }
}

/// The inode of this process's network namespace (what `lsns -t net` shows).
///
/// # Errors
/// [`PinError::Netns`].
pub fn netns_inode() -> Result<u64, PinError> {
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino())
        .map_err(PinError::Netns)
}

/// The directory under `root` holding the pins of `interface` in namespace `netns`.
pub fn pin_dir(root: &Path, netns: u64, interface: &str) -> PathBuf {
    root.join(netns.to_string()).join(pin_name(interface))
}

/// An interface name as a bpffs file name: bpffs refuses any name with a dot (reserved for
/// its own files), and a VLAN is typically `eth0.100`; `.` becomes `%2e` (and `%` itself
/// `%25`, so two names never meet). Names without either are unchanged.
pub fn pin_name(interface: &str) -> String {
    interface.replace('%', "%25").replace('.', "%2e")
}

/// What to do with the pins found under this interface's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nothing attached, no link pinned: attach afresh (pinned maps, if any, are adopted).
    Fresh,
    /// The pinned link is the one on this interface: update it in place.
    Adopt,
    /// The pinned link's interface is gone: drop these pins, then decide again.
    DropStale,
    /// A program that is not ours is attached: refuse.
    Foreign(Attached),
    /// The pinned link is attached to another interface: refuse.
    Elsewhere(LinkState),
}

/// Decides from the pinned link (if any), the interface's index and what the kernel says
/// is attached to it (one program per mode). Pure, so every case is tested.
pub fn decide(link: Option<LinkState>, ifindex: u32, attached: &[Attached]) -> Decision {
    let ours = |a: &Attached| link.is_some_and(|l| l.prog_id == a.prog_id);
    if let Some(other) = attached.iter().find(|a| !ours(a))
        && link.is_none_or(|l| l.ifindex != 0)
    {
        // Even next to our own link (in another mode): refuse rather than run half-shadowed.
        return match link {
            Some(l) if !attached.iter().any(ours) => Decision::Elsewhere(l),
            _ => Decision::Foreign(*other),
        };
    }
    match link {
        None => Decision::Fresh,
        Some(l) if l.ifindex == 0 => Decision::DropStale,
        Some(l) if l.ifindex == ifindex && attached.iter().any(ours) => Decision::Adopt,
        Some(l) => Decision::Elsewhere(l),
    }
}

fn foreign(interface: &str, a: Attached) -> PinError {
    let name = program_name(a.prog_id);
    let link = aya::programs::loaded_links()
        .filter_map(Result::ok)
        .find(|l| l.program_id() == a.prog_id)
        .map(|l| l.id());
    PinError::ForeignProgram {
        interface: interface.into(),
        name,
        prog_id: a.prog_id,
        how: removal_hint(interface, a.mode, link),
    }
}

/// How an operator removes a program attached in `mode`, through BPF link `link` if any.
pub fn removal_hint(interface: &str, mode: u8, link: Option<u32>) -> String {
    match link {
        Some(id) => format!(
            "it is held by BPF link {id} (`bpftool link show id {id}`): stop the process that owns it or remove its pin"
        ),
        None => {
            let kind = match mode {
                1 => "xdpdrv",
                2 => "xdpgeneric",
                3 => "xdpoffload",
                _ => "xdp",
            };
            format!("remove it with `ip link set dev {interface} {kind} off`")
        }
    }
}

/// Removes a pin directory (the link pin first: that detaches its program) and its
/// namespace directory when that is left empty. Returns how many pins went.
///
/// # Errors
/// The directory cannot be read.
pub fn remove_dir(dir: &Path) -> io::Result<usize> {
    let mut n = 0;
    let link = dir.join(LINK_PIN);
    if std::fs::remove_file(&link).is_ok() {
        n += 1;
    }
    // The program marker (`dataplane/running.rs`): a directory of pins of its own.
    super::running::clear_markers(dir);
    for entry in std::fs::read_dir(dir)? {
        if std::fs::remove_file(entry?.path()).is_ok() {
            n += 1;
        }
    }
    let _ = std::fs::remove_dir(dir);
    if let Some(parent) = dir.parent() {
        let _ = std::fs::remove_dir(parent);
    }
    Ok(n)
}

/// Pin directories under `root` whose pinned XDP link is defunct (its interface, and maybe
/// its namespace, is gone): the new layout's `<ns>/<if>` and the older `<if>`.
pub fn defunct_dirs(root: &Path) -> Vec<PathBuf> {
    let subdirs = |d: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(d)
            .map(|it| {
                it.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default()
    };
    let defunct = |d: &Path| matches!(read_link(&d.join(LINK_PIN)), Ok(Some(l)) if l.link_type == BPF_LINK_TYPE_XDP && l.ifindex == 0);
    let mut out = Vec::new();
    for d in subdirs(root) {
        if d.join(LINK_PIN).exists() {
            // The layout before pins were keyed by namespace: `<root>/<if>`.
            if defunct(&d) {
                out.push(d);
            }
        } else {
            out.extend(subdirs(&d).into_iter().filter(|d| defunct(d)));
        }
    }
    out
}

/// Finds (and prepares) the pin directory of `iface` under `root`: drops pins whose
/// interface is gone, moves an older xvip's `<root>/<if>` pins when their link is attached to
/// this interface, and refuses when another program or another interface's link is in the
/// way. Changes nothing when it refuses.
///
/// # Errors
/// [`PinError`]: a foreign program, a link attached elsewhere, or an unreadable pin.
pub fn claim(
    root: &Path,
    iface: &Interface,
    attach: crate::config::Attach,
) -> Result<(PathBuf, Placement), PinError> {
    let dir = pin_dir(root, netns_inode()?, &iface.name);
    let attached = attached_xdp(iface.index).map_err(|e| PinError::Query {
        interface: iface.name.clone(),
        reason: e.to_string(),
    })?;
    let read = |d: &Path| {
        let unreadable = |reason: String| PinError::Unreadable {
            path: d.join(LINK_PIN).display().to_string(),
            interface: iface.name.clone(),
            reason,
        };
        match read_link(&d.join(LINK_PIN)) {
            Ok(Some(l)) if l.link_type != BPF_LINK_TYPE_XDP => {
                Err(unreadable(format!("a link of type {}", l.link_type)))
            }
            Ok(l) => Ok(l),
            Err(e) => Err(unreadable(e.to_string())),
        }
    };
    let legacy = root.join(&iface.name);
    if !dir.exists()
        && let Ok(Some(l)) = read_link(&legacy.join(LINK_PIN))
        && decide(Some(l), iface.index, &attached) == Decision::Adopt
    {
        if let Some(parent) = dir.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match std::fs::rename(&legacy, &dir) {
            Ok(()) => log::info!(
                "moved an earlier xvip's pins for {} from {} to {}",
                iface.name,
                legacy.display(),
                dir.display()
            ),
            Err(e) => log::warn!("cannot move {} to {}: {e}", legacy.display(), dir.display()),
        }
    }
    let link = read(&dir)?;
    let placement = match attach {
        crate::config::Attach::Xdp => Placement::Xdp,
        crate::config::Attach::Tc => Placement::Tc,
        crate::config::Attach::Auto => {
            let decision = decide(link, iface.index, &attached);
            let p = auto_placement(decision);
            match decision {
                Decision::Foreign(a) => log::info!(
                    "{}: --attach auto: XDP program {} (id {}) holds the interface, not this xvip: attaching at tc ingress beside it",
                    iface.name,
                    program_name(a.prog_id),
                    a.prog_id
                ),
                _ => log::info!(
                    "{}: --attach auto: no other XDP program on the interface: attaching in XDP",
                    iface.name
                ),
            }
            p
        }
    };
    // At tc, a program holding XDP is a neighbour, not in the way.
    let decide = |link: Option<LinkState>| match decide(link, iface.index, &attached) {
        Decision::Foreign(_) if placement == Placement::Tc => Decision::Fresh,
        d => d,
    };
    let mut decision = decide(link);
    if decision == Decision::DropStale {
        let n = remove_dir(&dir).unwrap_or(0);
        log::warn!(
            "{}: the pinned XDP link in {} is defunct (its interface is gone): removed its {n} pins and their tracked connections, attaching afresh",
            iface.name,
            dir.display()
        );
        decision = decide(None);
    }
    if placement == Placement::Tc {
        claim_tc(&dir, iface)?;
    }
    accept(decision, &dir, iface)?;
    for stale in defunct_dirs(root).into_iter().filter(|d| *d != dir) {
        if let Ok(n) = remove_dir(&stale) {
            log::info!(
                "removed {n} pins in {}: their XDP link's interface is gone",
                stale.display()
            );
        }
    }
    Ok((dir, placement))
}

/// The name the kernel gives program `prog_id`, or "(unnamed)".
pub fn program_name(prog_id: u32) -> String {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.id() == prog_id)
        .and_then(|p| p.name_as_str().map(str::to_string))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "(unnamed)".into())
}

/// The pinned tcx link in `dir`, if any: adopted when it is on this interface, dropped
/// when its interface is gone, refused when it is on another one.
fn claim_tc(dir: &Path, iface: &Interface) -> Result<(), PinError> {
    let path = dir.join(TC_LINK_PIN);
    let unreadable = |reason: String| PinError::Unreadable {
        path: path.display().to_string(),
        interface: iface.name.clone(),
        reason,
    };
    match read_link(&path) {
        Ok(None) => Ok(()),
        Ok(Some(l)) if l.link_type != BPF_LINK_TYPE_TCX => {
            Err(unreadable(format!("a link of type {}", l.link_type)))
        }
        Ok(Some(l)) if l.ifindex == 0 => {
            let _ = std::fs::remove_file(&path);
            log::warn!(
                "{}: the pinned tc link {} is defunct (its interface is gone): removed, attaching afresh",
                iface.name,
                path.display()
            );
            Ok(())
        }
        Ok(Some(l)) if l.ifindex == iface.index => Ok(()),
        Ok(Some(l)) => Err(PinError::Elsewhere {
            dir: dir.display().to_string(),
            interface: iface.name.clone(),
            ifindex: l.ifindex,
            expected: iface.index,
            prog_id: l.prog_id,
        }),
        Err(e) => Err(unreadable(e.to_string())),
    }
}

/// File name of the pinned XDP link of a further interface (`--interface` repeated): kept in
/// the first interface's directory with the maps they share, so one `xvip detach --interface
/// FIRST` removes them all and a restart adopts each.
pub fn extra_link_pin(interface: &str) -> String {
    format!("{LINK_PIN}@{}", pin_name(interface))
}

/// [`claim`] for a further interface whose link pin lives in the first interface's
/// directory `dir`: adopts our link attached to it, drops a defunct one, refuses a foreign
/// program or a link attached elsewhere. Changes nothing when it refuses.
///
/// # Errors
/// As [`claim`].
pub fn claim_extra(dir: &Path, iface: &Interface) -> Result<(), PinError> {
    let path = dir.join(extra_link_pin(&iface.name));
    let attached = attached_xdp(iface.index).map_err(|e| PinError::Query {
        interface: iface.name.clone(),
        reason: e.to_string(),
    })?;
    let link = match read_link(&path) {
        Ok(Some(l)) if l.link_type != BPF_LINK_TYPE_XDP => {
            return Err(PinError::Unreadable {
                path: path.display().to_string(),
                interface: iface.name.clone(),
                reason: format!("a link of type {}", l.link_type),
            });
        }
        Ok(l) => l,
        Err(e) => {
            return Err(PinError::Unreadable {
                path: path.display().to_string(),
                interface: iface.name.clone(),
                reason: e.to_string(),
            });
        }
    };
    let mut decision = decide(link, iface.index, &attached);
    if decision == Decision::DropStale {
        let _ = std::fs::remove_file(&path);
        log::warn!(
            "{}: the pinned XDP link {} is defunct (its interface is gone): removed, attaching afresh",
            iface.name,
            path.display()
        );
        decision = decide(None, iface.index, &attached);
    }
    accept(decision, dir, iface)
}

/// `Ok` for a decision that leaves the pins in `dir` to us (fresh or adopted), else the
/// refusal naming what holds the interface. Called after a stale link was dropped and the
/// decision taken again, so never with [`Decision::DropStale`].
fn accept(decision: Decision, dir: &Path, iface: &Interface) -> Result<(), PinError> {
    match decision {
        Decision::Fresh | Decision::Adopt => Ok(()),
        Decision::Foreign(a) => Err(foreign(&iface.name, a)),
        Decision::Elsewhere(l) => Err(PinError::Elsewhere {
            dir: dir.display().to_string(),
            interface: iface.name.clone(),
            ifindex: l.ifindex,
            expected: iface.index,
            prog_id: l.prog_id,
        }),
        Decision::DropStale => unreachable!("decided again without a link"),
    }
}

/// Unpins (and so detaches) the further interfaces' links in `dir` that are not in `keep`:
/// an interface dropped from `--interface` since the last run. Returns their names.
pub fn drop_unlisted_links(dir: &Path, keep: &[&str]) -> Vec<String> {
    let prefix = format!("{LINK_PIN}@");
    let mut dropped = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(ifname) = name.strip_prefix(&prefix)
            && !keep.iter().any(|k| extra_link_pin(k) == name)
            && std::fs::remove_file(entry.path()).is_ok()
        {
            dropped.push(ifname.to_string());
        }
    }
    dropped
}

/// The pin directories `xvip detach --interface IF` removes in this namespace: this
/// namespace's `<ns>/<if>`, and an older xvip's `<if>` when its link is attached to this
/// namespace's interface of that name or is defunct.
///
/// # Errors
/// [`PinError::Netns`].
pub fn detach_dirs(root: &Path, interface: &str) -> Result<Vec<PathBuf>, PinError> {
    let mut out = Vec::new();
    let dir = pin_dir(root, netns_inode()?, interface);
    if dir.is_dir() {
        out.push(dir);
    }
    let legacy = root.join(interface);
    if let Ok(Some(l)) = read_link(&legacy.join(LINK_PIN)) {
        let ours = Interface::lookup(interface).ok().is_some_and(|i| {
            attached_xdp(i.index).is_ok_and(|a| a.iter().any(|a| a.prog_id == l.prog_id))
                && l.ifindex == i.index
        });
        if ours || l.ifindex == 0 {
            out.push(legacy);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {

    #[test]
    fn auto_goes_to_tc_only_beside_a_foreign_program() {
        let a = Attached {
            prog_id: 42,
            mode: 1,
        };
        assert_eq!(auto_placement(decide(None, 3, &[a])), Placement::Tc);
        assert_eq!(auto_placement(decide(None, 3, &[])), Placement::Xdp);
        let ours = LinkState {
            id: 7,
            prog_id: 42,
            link_type: BPF_LINK_TYPE_XDP,
            ifindex: 3,
        };
        // Our own pinned program (a restart): XDP again.
        assert_eq!(auto_placement(decide(Some(ours), 3, &[a])), Placement::Xdp);
    }

    use super::*;

    fn link(ifindex: u32, prog_id: u32) -> Option<LinkState> {
        Some(LinkState {
            id: 9,
            prog_id,
            link_type: BPF_LINK_TYPE_XDP,
            ifindex,
        })
    }
    fn att(prog_id: u32) -> Vec<Attached> {
        vec![Attached { prog_id, mode: 2 }]
    }

    #[test]
    fn further_interfaces_links_have_names_bpffs_accepts() {
        assert_eq!(extra_link_pin("eth1"), "link@eth1");
        assert_eq!(extra_link_pin("eth0.100"), "link@eth0%2e100");
        assert_eq!(extra_link_pin("a%b"), "link@a%25b");
        assert!(!extra_link_pin("bond0.7.3").contains('.'));
    }

    #[test]
    fn a_vlan_interfaces_pin_directory_has_no_dot() {
        let d = pin_dir(Path::new("/sys/fs/bpf/xvip"), 7, "eth0.100");
        assert_eq!(d, Path::new("/sys/fs/bpf/xvip/7/eth0%2e100"));
        assert_eq!(pin_dir(Path::new("/r"), 7, "eth0"), Path::new("/r/7/eth0"));
        assert_ne!(pin_name("a.b"), pin_name("a%2eb"));
    }

    #[test]
    fn only_the_link_attached_to_this_interface_is_adopted() {
        assert_eq!(decide(link(3, 40), 3, &att(40)), Decision::Adopt);
        // Same ifindex in another namespace: our interface runs another program.
        assert!(matches!(
            decide(link(3, 40), 3, &att(41)),
            Decision::Elsewhere(_)
        ));
        assert!(matches!(
            decide(link(3, 40), 3, &[]),
            Decision::Elsewhere(_)
        ));
        assert!(matches!(
            decide(link(5, 40), 3, &att(40)),
            Decision::Elsewhere(_)
        ));
    }

    #[test]
    fn a_defunct_link_is_dropped_whatever_is_attached() {
        assert_eq!(decide(link(0, 40), 3, &[]), Decision::DropStale);
        assert_eq!(decide(link(0, 40), 3, &att(7)), Decision::DropStale);
    }

    #[test]
    fn without_a_pinned_link_any_attached_program_is_foreign() {
        assert_eq!(decide(None, 3, &[]), Decision::Fresh);
        assert_eq!(decide(None, 3, &att(7)), Decision::Foreign(att(7)[0]));
    }

    #[test]
    fn a_foreign_program_in_another_mode_next_to_our_link_is_refused() {
        let both = [
            Attached {
                prog_id: 40,
                mode: 2,
            },
            Attached {
                prog_id: 7,
                mode: 1,
            },
        ];
        assert_eq!(decide(link(3, 40), 3, &both), Decision::Foreign(both[1]));
        assert_eq!(decide(link(3, 40), 3, &both[..1]), Decision::Adopt);
    }

    #[test]
    fn the_removal_hint_names_the_mode_or_the_link() {
        assert!(removal_hint("eth0", 2, None).contains("ip link set dev eth0 xdpgeneric off"));
        assert!(removal_hint("eth0", 1, None).contains("xdpdrv off"));
        assert!(removal_hint("eth0", 2, Some(12)).contains("bpftool link show id 12"));
    }

    #[test]
    fn pins_are_keyed_by_namespace_then_interface() {
        assert_eq!(
            pin_dir(Path::new("/sys/fs/bpf/xvip"), 4026531840, "eth0"),
            PathBuf::from("/sys/fs/bpf/xvip/4026531840/eth0")
        );
    }
}
