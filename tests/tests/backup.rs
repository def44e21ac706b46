//! Backup masters (`--backend ADDR,backup`, haproxy's `backup`) in the namespace lab: kept
//! out of the table while a primary is healthy, the table's when every primary is down,
//! and their flows kept when a primary returns.

use std::time::Duration;

use tests::lab::{Lab, TempDir as Files, VIP};

fn backend<'a>(
    s: &'a xvip::api::document::Status,
    addr: &str,
) -> &'a xvip::api::document::BackendStatus {
    s.backends
        .iter()
        .find(|b| b.addr == addr)
        .unwrap_or_else(|| panic!("{addr} not in the status: {:?}", s.backends))
}

const M1: &str = "192.0.2.11:6443";
const M2: &str = "192.0.2.12:6443";
const M3: &str = "192.0.2.13:6443";

#[test]
fn a_backup_serves_only_while_every_primary_is_down_and_keeps_its_flows_when_one_returns() {
    let files = Files::new("backup");
    let mut lab = Lab::standard("bkup", Some(&files.0)).unwrap();
    // The comma form, as clap splits it ("192.0.2.13", "backup").
    lab.start_xvip_and_wait(&[
        "--interface",
        "eth0",
        "--vip",
        VIP,
        "--backend",
        "192.0.2.11",
        "--backend",
        "192.0.2.12",
        "--backend",
        "192.0.2.13,backup",
    ])
    .unwrap();
    let s = lab.xvip_status("lb").unwrap();
    assert!(backend(&s, M3).backup && !backend(&s, M1).backup && !backend(&s, M2).backup);
    assert_eq!(backend(&s, M3).slots, 0, "a healthy backup holds no slot");
    assert!(!s.backups_serving);

    // Primaries up: no new connection reaches the backup.
    let seen = lab.spread("client", 24);
    assert!(
        seen.keys().all(|k| k == "m1" || k == "m2"),
        "with primaries up: {seen:?}"
    );

    // Both primaries fail /readyz (still serving, like draining API servers): the backup
    // takes the table within the health bound (fall 3 x 200 ms, a check in flight).
    std::fs::write(files.path("m1.notready"), b"").unwrap();
    std::fs::write(files.path("m2.notready"), b"").unwrap();
    let took = lab
        .wait_status("lb", Duration::from_secs(3), |s| s.backups_serving)
        .expect("the backup takes the table");
    println!(
        "backup in the table {:.0} ms after both primaries' /readyz started failing",
        took.as_secs_f64() * 1e3
    );
    assert!(took < Duration::from_millis(1200), "took {took:?}");
    let s = lab.xvip_status("lb").unwrap();
    assert!(!s.fail_open, "backups serving is not failing open");
    assert!(backend(&s, M3).slots > 0 && backend(&s, M1).slots == 0);
    let seen = lab.spread("client", 12);
    assert_eq!(seen.get("m3"), Some(&12), "with primaries down: {seen:?}");

    // A long-lived connection to the backup, seen by the data path before going on.
    let before = backend(&lab.xvip_status("lb").unwrap(), M3).new_flows;
    lab.start_stream(
        "to-backup",
        "client",
        &format!("https://{VIP}:6443/watch"),
        Duration::from_secs(5),
    )
    .unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        backend(s, M3).new_flows > before
    })
    .expect("the stream's flow reaches the backup");

    // A primary back: new connections go to it, the stream to the backup stays.
    std::fs::remove_file(files.path("m1.notready")).unwrap();
    lab.wait_status("lb", Duration::from_secs(3), |s| {
        !s.backups_serving && backend(s, M1).healthy
    })
    .expect("m1 takes the table back");
    let seen = lab.spread("client", 12);
    assert_eq!(seen.get("m1"), Some(&12), "with m1 back: {seen:?}");
    assert_eq!(
        backend(&lab.xvip_status("lb").unwrap(), M3).slots,
        0,
        "the backup leaves the table"
    );
    let (code, out) = lab
        .finish_stream("to-backup", Duration::from_secs(8))
        .unwrap();
    // curl exits 28 when --max-time ends the stream; a reset would be 56 or 18.
    assert_eq!(code, Some(28), "the stream to the backup was cut: {out}");
    let ticks = out.lines().count();
    assert!(
        out.lines().all(|l| l.starts_with("m3 tick")) && ticks >= 40,
        "the stream delivered {ticks} lines, all from m3 expected: {out}"
    );
}
