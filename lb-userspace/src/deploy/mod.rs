//! Running xvip on a node: the static pod and systemd unit it prints.

pub mod manifest;
