//! The ground floor of plumbing: thin wrappers over the kernel and the network that know
//! nothing of xvip's concerns. `sys` (libc calls: mount, statfs, a readable fd), `http`
//! (hyper over any stream, with bounded bodies), `iface` (an
//! interface's index, MAC and IPv4 address), `netlink` (one
//! `NETLINK_ROUTE` request/answer helper), `tls` (the rustls client
//! configurations of the health checks and discovery). Imports nothing of this crate.

pub mod http;
pub mod iface;
pub mod netlink;
pub mod sys;
pub mod tls;
