//! Running xvip on a node: the static pod and systemd unit it prints, and the import of
//! another tool's configuration (`xvip import keepalived`).

pub mod import;
pub mod manifest;
