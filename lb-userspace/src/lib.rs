//! xvip's daemon: configuration, health checks, Maglev tables, ARP, and the BPF maps.

pub mod health;
pub mod maglev;
