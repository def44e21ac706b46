//! Deciding where traffic goes: health checks of the masters, the Maglev tables, the
//! reconciler that turns backends + health + next hops into map contents, and master
//! discovery from the Kubernetes API, and the backends' next hops from the kernel's route and
//! neighbour tables.

pub mod discovery;
pub mod health;
pub mod maglev;
pub mod nexthop;
pub mod passive;
pub mod reconcile;
