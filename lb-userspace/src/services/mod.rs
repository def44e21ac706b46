//! Services of `type: LoadBalancer` (`--services`, docs/services.md): `ipam` the pure
//! address plan from the pools and the Services' statuses; `kube` the API calls; `watch`
//! the task (list and watch, status writes with their `resourceVersion`, events) and what
//! it hands the daemon to announce; `endpoints` which Services have a ready endpoint on
//! this node (`externalTrafficPolicy: Local`).

pub mod endpoints;
pub mod ipam;
pub mod kube;
pub mod watch;
