//! xvip's daemon, a folder per concern: `config` (settings), `dataplane` (load, attach,
//! pins, maps, the node itself), `control` (health, Maglev, reconcile, discovery),
//! `announce` (ARP, VRRP), `sync` (conntrack sync between VRRP nodes), `api` (status and metrics), `deploy` (manifests), `doctor` (`xvip doctor`: the node and the masters checked, read-only), `http` (hyper
//! plumbing for the health checks, discovery and the status endpoint), and `daemon`,
//! which wires them together. Nothing is re-exported at the top: a path names the folder
//! a module lives in (`crate::control::health`, `xvip::api::document`), so it says its floor.

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
pub mod services;
pub mod sync;
pub mod sys;
