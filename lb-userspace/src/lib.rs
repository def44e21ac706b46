//! xvip's daemon, a folder per concern, on two ground floors: `net` (the kernel and the
//! network as plumbing: syscalls, hyper, sockets) and `wire` (pure encoders and decoders of
//! the packets xvip speaks). Above them: `config` (settings), `dataplane` (load, attach,
//! pins, maps, the node itself), `control` (health, Maglev, reconcile, discovery),
//! `announce` (ARP, NDP, VRRP, routes), `sync` (conntrack sync between VRRP nodes), `api`
//! (status and metrics), `deploy` (manifests), `doctor` (`xvip doctor`: the node and the
//! masters checked, read-only), and `daemon`, which wires them together. Nothing is
//! re-exported at the top: a path names the folder a module lives in
//! (`crate::control::health`, `xvip::wire::vrrp`), so it says its floor.

pub mod announce;
pub mod api;
pub mod config;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod deploy;
pub mod doctor;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod net;
pub mod services;
pub mod sync;
pub mod wire;
