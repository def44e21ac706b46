//! xvip's daemon, a folder per concern: `config` (settings), `dataplane` (load, attach,
//! pins, maps, the node itself), `control` (health, Maglev, reconcile, discovery),
//! `announce` (ARP, VRRP), `sync` (conntrack sync between VRRP nodes), `api` (status and metrics), `deploy` (manifests), `doctor` (`xvip doctor`: the node and the masters checked, read-only), `http` (hyper
//! plumbing for the health checks, discovery and the status endpoint), and `daemon`,
//! which wires them together. Each module is also re-exported at the top
//! (`xvip::health`, `xvip::arp`, ...), so paths do not depend on the folders.

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
pub mod http;
pub mod route;
pub mod sync;
pub mod sys;

pub use announce::{arp, ndp, vrrp};
pub use api::status;
pub use control::{discovery, health, maglev, nexthop, reconcile};
pub use dataplane::{local, pins};
pub use deploy::{import, manifest};
