//! verify-backup interrupted during a restore test: by a signal, or by
//! the reader of its records going away. Either way the scratch database
//! is dropped.

mod common;

use std::fs;
use std::process::{Command, Stdio};

use common::{copy_set, make_set, scratch_names, seed, verify, wait_for_scratch};
use opskit_testkit::cluster;

#[test]
fn sigterm_during_restore_drops_the_scratch_database() {
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 400_000);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    let child = verify()
        .arg(&set)
        .args(["--restore-into", &c.url("postgres"), "--pg-bindir"])
        .arg(c.bindir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mine = wait_for_scratch(c, pid);
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_ne!(o.status.code(), Some(0), "{stdout}");
    assert_eq!(
        c.query("postgres", &mine),
        ["0"],
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_reader_that_goes_away_mid_restore_ends_the_run_quietly_and_drops_the_scratch_database() {
    // `verify-backup --restore-into ... | head -1`: stdout closes while the
    // first of two sets is being restored. The write of its record fails;
    // the run ends through main with status 0, as a Unix tool on SIGPIPE,
    // the scratch database is dropped, and the second set is not started.
    let c = cluster();
    let db = c.create_db();
    seed(c, &db, 400_000);
    let tmp = tempfile::tempdir().unwrap();
    let set = make_set(c, &db, tmp.path());
    let copies = tmp.path().join("copy");
    fs::create_dir(&copies).unwrap();
    let second = copy_set(&set, &copies);
    let mut child = verify()
        .arg(&set)
        .arg(&second)
        .args(["--restore-into", &c.url("postgres"), "--pg-bindir"])
        .arg(c.bindir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mine = wait_for_scratch(c, child.id());
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert_eq!(c.query("postgres", &mine), ["0"], "{stderr}");
    assert_eq!(
        scratch_names(&stderr).len(),
        1,
        "the second set was restored after the reader left: {stderr}"
    );
    assert!(!stderr.contains("ERROR"), "{stderr}");
}
