//! Running xvip on a node: the static pod, systemd unit and man pages it prints, the import
//! of another tool's configuration (`xvip import keepalived`), and `xvip --version`.

pub mod import;
pub mod manifest;
pub mod version;
