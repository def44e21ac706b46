//! What the daemon reports: the status document, its Prometheus text, and the endpoint
//! that serves both.

pub mod status;
