//! keepalived's `track_interface` (`--vrrp-track-interface`): a thread reads the tracked
//! interfaces' flags every [`EVERY`] and tells both VRRP instances whether one is down (a
//! fault: never master, a master resigns). A missing interface counts as down, as in
//! keepalived. One log line per change, naming the interfaces.

use std::time::Duration;

use tokio::sync::watch;

/// How often the interfaces are read (a flag read per interface: cheap).
pub const EVERY: Duration = Duration::from_millis(100);

/// The tracked interfaces down among `names`, by `running`.
pub fn down<'a>(names: &'a [String], running: impl Fn(&str) -> bool) -> Vec<&'a str> {
    names
        .iter()
        .map(String::as_str)
        .filter(|n| !running(n))
        .collect()
}

/// Starts the tracker; the receiver says whether the node is in fault (`false` when
/// nothing is tracked: the thread is not started then).
pub(super) fn spawn(names: &[String]) -> watch::Receiver<bool> {
    let sock = crate::sys::ioctl_socket().ok();
    let running = |s: &Option<std::os::fd::OwnedFd>, n: &str| {
        s.as_ref()
            .is_some_and(|s| crate::sys::interface_running(s, n))
    };
    let first: Vec<String> = down(names, |n| running(&sock, n))
        .into_iter()
        .map(String::from)
        .collect();
    if !names.is_empty() && !first.is_empty() {
        log::warn!(
            "VRRP fault: tracked interface {} down or missing",
            first.join(", ")
        );
    }
    let (tx, rx) = watch::channel(!first.is_empty());
    if names.is_empty() {
        return rx;
    }
    let names = names.to_vec();
    let spawned = std::thread::Builder::new()
        .name("xvip-track".into())
        .spawn(move || {
            let mut was = first;
            while !tx.is_closed() {
                std::thread::sleep(EVERY);
                let now: Vec<String> = down(&names, |n| running(&sock, n))
                    .into_iter()
                    .map(String::from)
                    .collect();
                if now == was {
                    continue;
                }
                if now.is_empty() {
                    log::info!("VRRP fault over: the tracked interfaces are up");
                } else {
                    log::warn!(
                        "VRRP fault: tracked interface {} down or missing",
                        now.join(", ")
                    );
                }
                tx.send_replace(!now.is_empty());
                was = now;
            }
        });
    if let Err(e) = spawned {
        log::error!("the interface tracker could not start: {e}");
    }
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interface_not_running_or_missing_is_down() {
        let names = vec!["eth1".to_string(), "eth2".to_string()];
        assert!(down(&names, |_| true).is_empty());
        assert_eq!(down(&names, |n| n != "eth2"), ["eth2"]);
        let sock = crate::sys::ioctl_socket().unwrap();
        assert!(crate::sys::interface_running(&sock, "lo"), "lo is up");
        assert!(!crate::sys::interface_running(&sock, "xvip-nothere0"));
        assert!(!crate::sys::interface_running(&sock, "a-name-far-too-long-for-it"));
    }
}
