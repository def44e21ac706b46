//! The node's own checks on the election: keepalived's `track_interface`
//! (`--vrrp-track-interface`: an interface down or missing is a fault, never master) and
//! the witness (`--vrrp-track-ip`: while it does not answer, the priority is lowered by its
//! weight). One thread reads the interfaces' flags every [`EVERY`] and pings the witness
//! every `witness::EVERY`, and tells both VRRP instances through one watch channel. One log
//! line per change.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use tokio::sync::watch;

use crate::{
    announce::vrrp::{Tracked, witness},
    config::vrrp::VrrpSettings,
};

/// How often the interfaces are read (a flag read per interface: cheap).
pub const EVERY: Duration = Duration::from_millis(100);

/// The tracked interfaces down among `names`, by `running`.
pub fn down(names: &[String], running: impl Fn(&str) -> bool) -> Vec<&str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| !running(n))
        .collect()
}

/// The witness's probe socket: raw ICMP, non-blocking.
struct Probe {
    fd: OwnedFd,
    to: Ipv4Addr,
    id: u16,
    seq: u16,
    answered: bool,
}

impl Probe {
    fn open(to: Ipv4Addr) -> std::io::Result<Self> {
        // SAFETY: plain socket call; the descriptor is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: a fresh descriptor we own.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            to,
            id: std::process::id() as u16,
            seq: 0,
            answered: false,
        })
    }

    fn send(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        self.answered = false;
        let pkt = witness::echo_request(self.id, self.seq);
        // SAFETY: a zeroed sockaddr_in is valid; fields set below.
        let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        sin.sin_family = libc::AF_INET as u16;
        sin.sin_addr.s_addr = u32::from(self.to).to_be();
        // SAFETY: sending a local buffer to a correctly sized address.
        unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&sin as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
    }

    /// Reads what arrived (at most `witness::MAX_READ` packets): whether the last probe
    /// was answered.
    fn read(&mut self) {
        let mut buf = [0u8; 1500];
        for _ in 0..witness::MAX_READ {
            // SAFETY: receiving into a local buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                return;
            };
            if witness::reply_seq(&buf[..n], self.to, self.id) == Some(self.seq) {
                self.answered = true;
            }
        }
    }
}

/// The interfaces the election tracks: the VRRP interface itself (`primary`), as
/// keepalived does unless `dont_track_primary` is set, then `--vrrp-track-interface`'s.
/// A router whose own link is down hears no adverts: without this it would become master
/// on the dead link and still be master, answering ARP beside the real one, when the link
/// comes back (measured in the chaos test: 50-100 ms with two owners per link flap of a
/// backup).
pub fn tracked_names(configured: &[String], primary: &str) -> Vec<String> {
    let mut names = vec![primary.to_string()];
    for n in configured {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Starts the tracker when VRRP runs; the receiver says what it found (no VRRP: always
/// the default, no thread).
pub(super) fn spawn(vrrp: Option<&VrrpSettings>, primary: &str) -> watch::Receiver<Tracked> {
    let names: Vec<String> = vrrp
        .map(|v| tracked_names(&v.track_interfaces, primary))
        .unwrap_or_default();
    let witness_cfg =
        vrrp.and_then(|v| v.track_ip.map(|a| (a, v.track_ip_weight, v.track_ip_fall)));
    let sock = crate::net::sys::ioctl_socket().ok();
    let running = move |s: &Option<OwnedFd>, n: &str| {
        s.as_ref()
            .is_some_and(|s| crate::net::sys::interface_running(s, n))
    };
    let first: Vec<String> = down(&names, |n| running(&sock, n))
        .into_iter()
        .map(String::from)
        .collect();
    if !first.is_empty() {
        log::warn!(
            "VRRP fault: tracked interface {} down or missing",
            first.join(", ")
        );
    }
    let (tx, rx) = watch::channel(Tracked {
        fault: !first.is_empty(),
        penalty: 0,
    });
    if names.is_empty() && witness_cfg.is_none() {
        return rx;
    }
    let mut probe = match witness_cfg.map(|(a, _, _)| Probe::open(a)) {
        Some(Ok(p)) => Some(p),
        Some(Err(e)) => {
            log::error!(
                "--vrrp-track-ip: cannot open an ICMP socket ({e}): the witness is not checked"
            );
            None
        }
        None => None,
    };
    let spawned = std::thread::Builder::new()
        .name("xvip-track".into())
        .spawn(move || {
            let mut was = first;
            let mut w = witness::Witness::default();
            let mut next_probe = Instant::now();
            if let Some(p) = &mut probe {
                p.send();
                next_probe += witness::EVERY;
            }
            while !tx.is_closed() {
                std::thread::sleep(EVERY);
                let now: Vec<String> = down(&names, |n| running(&sock, n))
                    .into_iter()
                    .map(String::from)
                    .collect();
                if now != was {
                    if now.is_empty() {
                        log::info!("VRRP fault over: the tracked interfaces are up");
                    } else {
                        log::warn!(
                            "VRRP fault: tracked interface {} down or missing",
                            now.join(", ")
                        );
                    }
                    tx.send_modify(|t| t.fault = !now.is_empty());
                    was = now;
                }
                if let (Some(p), Some((addr, weight, fall))) = (&mut probe, witness_cfg) {
                    p.read();
                    if Instant::now() >= next_probe {
                        if let Some(lost) = w.probed(p.answered, fall) {
                            if lost {
                                log::warn!(
                                    "VRRP witness {addr}: {fall} probes unanswered, priority lowered by {weight}"
                                );
                            } else {
                                log::info!("VRRP witness {addr} answers again");
                            }
                            tx.send_modify(|t| t.penalty = if lost { weight } else { 0 });
                        }
                        p.send();
                        next_probe += witness::EVERY;
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log::error!("the tracker could not start: {e}");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vrrp_interface_is_always_tracked_and_listed_once() {
        assert_eq!(tracked_names(&[], "eth0"), ["eth0"]);
        let configured = ["bond0".to_string(), "eth0".to_string()];
        assert_eq!(tracked_names(&configured, "eth0"), ["eth0", "bond0"]);
    }

    #[test]
    fn an_interface_not_running_or_missing_is_down() {
        let names = vec!["eth1".to_string(), "eth2".to_string()];
        assert!(down(&names, |_| true).is_empty());
        assert_eq!(down(&names, |n| n != "eth2"), ["eth2"]);
        let sock = crate::net::sys::ioctl_socket().unwrap();
        assert!(crate::net::sys::interface_running(&sock, "lo"), "lo is up");
        assert!(!crate::net::sys::interface_running(&sock, "xvip-nothere0"));
        assert!(!crate::net::sys::interface_running(
            &sock,
            "a-name-far-too-long-for-it"
        ));
    }
}
