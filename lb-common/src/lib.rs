//! Types, constants and pure helpers shared by the XDP program (`lb-ebpf`) and the daemon
//! (`lb-userspace`). Everything here is `no_std` and plain old data, so both sides use one
//! definition of every map key and value.
#![no_std]

pub mod checksum;
pub mod consts;
pub mod hash;
#[cfg(feature = "lab")]
pub mod lab;
pub mod maps;
pub mod prime;
pub mod stats;

pub use consts::*;
pub use maps::*;
pub use stats::Reason;
