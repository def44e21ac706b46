//! Deciding where traffic goes: health checks of the masters, the Maglev tables, the
//! reconciler that turns backends + health + next hops into map contents, and master
//! discovery from the Kubernetes API.

pub mod discovery;
pub mod health;
pub mod maglev;
pub mod reconcile;
