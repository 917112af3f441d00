//! Drills of the backup procedures against a real PostgreSQL: the nightly
//! job over two "days", its failures, the restore test, and disaster
//! recovery after the database is dropped.

use std::process::Command;

use opskit_testkit::age::Key;
use opskit_testkit::procs::{Procs, dump, example_app as app_db};
use opskit_testkit::tools::{Output, run};
use opskit_testkit::{Cluster, TestDb, bin, cluster};

#[path = "procedures_backup/parallel_restore.rs"]
mod parallel_restore;
#[path = "procedures_backup/progress.rs"]
mod progress;

#[test]
fn nightly_over_two_days() {
    let c = cluster();
    let db = app_db(c);
    let mut p = Procs::new(c, &db.name);
    p.set("OPSKIT_RETENTION", "--keep-daily 1 --min-keep 1");
    p.add_uploads();

    run(&mut p.script("backup-system.sh")).ok();
    let first = p.sets();
    assert_eq!(first.len(), 1);
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_backup_run_success"),
        1.0
    );
    assert!(p.metric("opskit_backup.prom", "opskit_backup_run_bytes") > 10_000.0);
    // "Yesterday": the set is moved a day back, as if made then.
    let (name, ts) = first[0].rsplit_once('-').unwrap();
    let day: u32 = ts[6..8].parse().unwrap();
    let yesterday = format!("{name}-{}{:02}{}", &ts[..6], day - 1, &ts[8..]);
    std::fs::rename(p.root().join(&first[0]), p.root().join(&yesterday)).unwrap();

    let out = run(&mut p.script("backup-system.sh"));
    out.ok();
    let sets = p.sets();
    assert_eq!(
        sets.len(),
        1,
        "keep-daily 1 keeps today's set only: {sets:?}"
    );
    assert_ne!(sets[0], yesterday);
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_backup_pruned_sets"),
        1.0
    );
    assert!(out.stderr.contains("deleted 1"), "{}", out.stderr);
    // Both nights' verifications are logged; the set holds the files archive.
    let log = std::fs::read_to_string(p.root().join("verified.ndjson")).unwrap();
    assert_eq!(log.lines().filter(|l| l.contains("\"ok\":true")).count(), 2);
    assert!(
        p.root()
            .join(&sets[0])
            .join("files-uploads.tar.zst")
            .exists()
    );

    // The weekly restore test restores it and records the time it took.
    let out = run(&mut p.script("restore-test.sh"));
    out.ok();
    assert_eq!(
        p.metric("opskit_restore_test.prom", "opskit_restore_test_success"),
        1.0
    );
    assert!(
        p.metric(
            "opskit_restore_test.prom",
            "opskit_restore_test_duration_seconds"
        ) > 0.0
    );
    assert!(
        out.stderr.contains("the recovery time to expect"),
        "{}",
        out.stderr
    );
}

/// Two older good sets and a policy that would delete one of them.
fn with_two_sets(c: &'static Cluster) -> (TestDb, Procs) {
    let db = app_db(c);
    let mut p = Procs::new(c, &db.name);
    p.set("OPSKIT_RETENTION", "--keep-last 1 --min-keep 1");
    run(&mut p.script("backup-system.sh")).ok();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    p.set("OPSKIT_RETENTION", "--keep-last 5");
    run(&mut p.script("backup-system.sh")).ok();
    p.set("OPSKIT_RETENTION", "--keep-last 1 --min-keep 1");
    assert_eq!(p.sets().len(), 2);
    (db, p)
}

fn failed_night(p: &Procs, out: &Output, before: &[String]) {
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_backup_run_success"),
        0.0
    );
    assert_eq!(
        p.metric("opskit_backup.prom", "opskit_backup_prune_ran"),
        0.0
    );
    assert!(out.stderr.contains("FAILED"), "{}", out.stderr);
    for s in before {
        assert!(
            p.root().join(s).exists(),
            "{s} was deleted on a failed night"
        );
    }
}

#[test]
fn failed_dump_deletes_nothing() {
    let c = cluster();
    let (_db, mut p) = with_two_sets(c);
    let before = p.sets();
    p.set("DATABASE_URL", &c.url("no_such_database"));
    let out = run(&mut p.script("backup-system.sh"));
    failed_night(&p, &out, &before);
    assert_eq!(out.code, 2);
    assert_eq!(
        p.metric(
            "opskit_backup.prom",
            "opskit_backup_step_exit_code{step=\"pgbackup\"}"
        ),
        2.0
    );
    assert!(out.stderr.contains("no_such_database"), "{}", out.stderr);
}

#[test]
fn full_disk_deletes_nothing() {
    let c = cluster();
    let (_db, p) = with_two_sets(c);
    let before = p.sets();
    // ulimit -f: any file the night writes past 64 KiB fails as on a full disk.
    let script = opskit_testkit::sh::scripts().join("backup-system.sh");
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "ulimit -f 64 && exec \"$0\""]).arg(&script);
    p.configure(&mut cmd);
    let out = run(&mut cmd);
    failed_night(&p, &out, &before);
    assert!(
        out.stderr.contains("file size limit exceeded"),
        "{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(p.root())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("opskit-tmp"))
        .collect();
    assert!(left.is_empty(), "half-written files left: {left:?}");
    assert_eq!(p.sets(), before);
}

#[test]
fn failed_verification_deletes_nothing() {
    let c = cluster();
    let (_db, mut p) = with_two_sets(c);
    let before = p.sets();
    // A pg_restore that cannot read the archive: the new set fails verification.
    let bindir = p.path("bin");
    std::fs::create_dir(&bindir).unwrap();
    for tool in ["pg_dump", "pg_dumpall", "psql"] {
        std::os::unix::fs::symlink(c.bindir().join(tool), bindir.join(tool)).unwrap();
    }
    let fake = bindir.join("pg_restore");
    let real = c.bindir().join("pg_restore");
    std::fs::write(&fake, format!("#!/bin/sh\n[ \"$1\" = --version ] && exec {} --version\necho 'pg_restore: error: corrupt archive' >&2\nexit 1\n", real.display())).unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    p.set("OPSKIT_PG_BINDIR", bindir.to_str().unwrap());
    let out = run(&mut p.script("backup-system.sh"));
    failed_night(&p, &out, &before);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(
        p.metric(
            "opskit_backup.prom",
            "opskit_backup_step_exit_code{step=\"verify\"}"
        ),
        1.0
    );
}

#[test]
fn disaster_recovery_after_the_database_is_dropped() {
    let c = cluster();
    let db = app_db(c);
    let p = Procs::new(c, &db.name);
    run(&mut p.script("backup-system.sh")).ok();
    let original = dump(c, &db.name, &[]);
    assert!(
        original.contains("COPY public.orders"),
        "no data in the dump"
    );
    c.client("postgres")
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name))
        .unwrap();

    // Without --yes and without a terminal: refused, nothing done.
    let out = run(&mut p.script("restore-system.sh"));
    assert_eq!(out.code, 64, "{}", out.stderr);
    let out = run(p.script("restore-system.sh").arg("--yes"));
    out.ok();
    assert!(out.stderr.contains("recovery took"), "{}", out.stderr);
    assert_eq!(dump(c, &db.name, &[]), original, "restored data differs");

    // Restoring again over a live database keeps the old one aside; in
    // parallel (from a copy, removed after) this time.
    let mut p = p;
    let scratch = p.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    p.set("OPSKIT_SCRATCH_DIR", scratch.to_str().unwrap());
    let out = run(p.script("restore-system.sh").args(["--yes", "--jobs", "2"]));
    out.ok();
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    let aside = c.databases_starting_with(&format!("{}_before_", db.name));
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert_eq!(dump(c, &aside[0], &[]), original);
    c.client("postgres")
        .batch_execute(&format!("DROP DATABASE \"{}\"", aside[0]))
        .unwrap();

    // A production database needs --yes-production.
    p.set("OPSKIT_PRODUCTION", "1");
    let out = run(p.script("restore-system.sh").arg("--yes"));
    assert_eq!(out.code, 64);
    assert!(out.stderr.contains("--yes-production"), "{}", out.stderr);
}

/// The nightly job with zstd sets, and disaster recovery from one: roles,
/// data and files come back through the stock zstd tool.
#[test]
fn zstd_sets_through_the_nightly_job_and_recovery() {
    let c = cluster();
    let db = app_db(c);
    let mut p = Procs::new(c, &db.name);
    p.set("OPSKIT_BACKUP_COMPRESS", "zstd");
    p.add_uploads();
    run(&mut p.script("backup-system.sh")).ok();
    let set = p.root().join(&p.sets()[0]);
    for f in ["db.dump.zst", "globals.sql.zst", "files-uploads.tar.zst"] {
        assert!(set.join(f).is_file(), "{f} in {}", set.display());
    }
    let original = dump(c, &db.name, &[]);
    c.client("postgres")
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name))
        .unwrap();
    let into = p.path("restored-files");
    let out = run(p
        .script("restore-system.sh")
        .arg("--yes")
        .arg("--files-into")
        .arg(&into));
    out.ok();
    assert_eq!(dump(c, &db.name, &[]), original, "restored data differs");
    assert_eq!(
        std::fs::read_to_string(into.join("uploads/a.txt")).unwrap(),
        "an upload"
    );
}

/// The nightly job with sets encrypted to an age key that is not on the
/// server: the nightly verification is checksums only and says so; the
/// restore test and disaster recovery take the identity from the env file,
/// and without it change nothing.
#[test]
fn encrypted_sets_through_the_nightly_job_restore_test_and_recovery() {
    let c = cluster();
    let db = app_db(c);
    let mut p = Procs::new(c, &db.name);
    let key = Key::new(&p.path(""), "recovery.key");
    p.set("OPSKIT_AGE_RECIPIENTS", &key.public);
    p.add_uploads();
    run(&mut p.script("backup-system.sh")).ok();
    let set = p.root().join(&p.sets()[0]);
    for f in [
        "db.dump.zst.age",
        "globals.sql.zst.age",
        "files-uploads.tar.zst.age",
        "contents.json.age",
    ] {
        assert!(set.join(f).is_file(), "{f} in {}", set.display());
    }
    let results = p.root().join("verified.ndjson");
    let last_verdict = || {
        let log = std::fs::read_to_string(&results).unwrap();
        serde_json::from_str::<serde_json::Value>(log.lines().last().unwrap()).unwrap()
    };
    assert_eq!(last_verdict()["depth"], "quick");
    assert_eq!(last_verdict()["ok"], true);

    let out = run(&mut p.script("restore-test.sh"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("needs its identity"), "{}", out.stderr);
    p.set("OPSKIT_AGE_IDENTITY", key.identity.to_str().unwrap());
    run(&mut p.script("restore-test.sh")).ok();
    assert_eq!(last_verdict()["depth"], "restore");

    let original = dump(c, &db.name, &[]);
    c.client("postgres")
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", db.name))
        .unwrap();
    let into = p.path("restored-files");
    let out = run(p
        .script("restore-system.sh")
        .args(["--yes", "--files-into"])
        .arg(&into)
        .env("OPSKIT_AGE_IDENTITY", ""));
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("is encrypted ({})", key.public)),
        "{}",
        out.stderr
    );
    assert!(!into.exists(), "nothing is changed without the identity");
    let out = run(p
        .script("restore-system.sh")
        .args(["--yes", "--files-into"])
        .arg(&into));
    out.ok();
    assert_eq!(dump(c, &db.name, &[]), original, "restored data differs");
    assert_eq!(
        std::fs::read_to_string(into.join("uploads/a.txt")).unwrap(),
        "an upload"
    );
}

/// "The newest set that passed verification" is the newest set whose
/// latest verification passed: one that passed at night and failed its
/// weekly re-verification is not restored in a disaster (the procedures
/// used to take the newest set that had *ever* passed).
#[test]
fn a_set_that_failed_its_latest_verification_is_not_restored() {
    let c = cluster();
    let (db, p) = with_two_sets(c);
    let sets = p.sets();
    let (older, newer) = (&sets[0], &sets[1]);
    // The weekly re-verification of the newer set finds it damaged.
    let dump = std::fs::read_dir(p.root().join(newer))
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("db.dump"))
        .unwrap()
        .path();
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let mut v = Command::new(bin("verify-backup"));
    p.configure(&mut v);
    let out = run(opskit_testkit::signing::signed(&mut v)
        .arg("--record")
        .arg(p.root().join(newer)));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let out = run(p.script("restore-system.sh").args(["--yes", "--no-health"]));
    out.ok();
    assert!(
        out.stderr.contains(&format!("restoring {older}")),
        "did not restore the older good set {older}: {}",
        out.stderr
    );
    let _ = db;
}
