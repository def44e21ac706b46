//! The ground floor of formats: pure encoders and checked decoders of the packets xvip
//! speaks, bytes in and bytes out, no sockets, no clocks (in the style of smoltcp's
//! `wire`). `mark` (what an xvip node says of itself in its ARP and NDP frames), `arp` (ARP frames and the mark in their padding), `ndp` (IPv6 neighbour solicitations and advertisements, the mark in an experimental option), `vrrp` (VRRPv2/v3 adverts and the protocol's vocabulary), `sync` (the
//! authenticated conntrack-sync datagram and its key). Imports nothing of this crate.

pub mod arp;
pub mod mark;
pub mod ndp;
pub mod sync;
pub mod vrrp;
