//! Telling the network where the VIP is: ARP answers and gratuitous ARP, and the VRRP
//! election of the node that holds it; `limit` bounds the replies requests can cause;
//! `clients` tells the known clients of a takeover.

pub mod arp;
pub mod claims;
pub mod clients;
pub mod limit;
pub mod ndp;
pub mod route;
pub mod vrrp;
