//! xvip's daemon: configuration, health checks, Maglev tables, ARP, the BPF maps, and what
//! it reports.

pub mod arp;
pub mod config;
pub mod daemon;
pub mod dataplane;
pub mod discovery;
#[cfg(test)]
pub(crate) mod fuzz;
pub mod health;
pub mod local;
pub mod maglev;
pub mod manifest;
pub mod pins;
pub mod reconcile;
pub mod status;
pub mod sys;
pub mod vrrp;
