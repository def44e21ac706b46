//! The ground floor of formats: pure encoders and checked decoders of the packets xvip
//! speaks, bytes in and bytes out, no sockets, no clocks (in the style of smoltcp's
//! `wire`). `arp` (ARP frames and xvip's mark in their padding), `ndp` (IPv6 neighbour solicitations and advertisements), `vrrp` (VRRPv2/v3 adverts and the protocol's vocabulary), `sync` (the
//! authenticated conntrack-sync datagram and its key). Imports nothing of this crate.

pub mod arp;
pub mod ndp;
pub mod sync;
pub mod vrrp;
