//! Telling the network where the VIP is: ARP answers and gratuitous ARP, and the VRRP
//! election of the node that holds it.

pub mod arp;
pub mod ndp;
pub mod vrrp;
