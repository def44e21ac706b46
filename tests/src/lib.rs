//! Integration tests and lab tools for xvip: network namespaces joined by a bridge, the
//! processes started in them, all torn down in `Drop` (also when a test fails).
//!
//! Addresses come from the documentation ranges only (192.0.2.0/24, 198.51.100.0/24,
//! 203.0.113.0/24); nothing is attached to or routed through the host's own interfaces.

pub mod bench;
pub mod fixture;
pub mod flood;
pub mod lab;
pub mod packets;
