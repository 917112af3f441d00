//! Base sets (`pgbackup --physical`) from the real pg_basebackup: an
//! encrypted one verified without its key (quick), with it, and by replay
//! in a scratch cluster that finds the rows; a damaged one caught and never
//! restored; a role without REPLICATION refused with a clear error and
//! nothing left behind.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{names, pgbackup, sets};
use opskit_testkit::age::Key;
use opskit_testkit::tools::{Output, run};
use opskit_testkit::{bin, cluster};

/// A directory the server's user owns (the replay runs as it).
fn shared_dir() -> tempfile::TempDir {
    let c = cluster();
    tempfile::Builder::new()
        .prefix("opskit-base-")
        .tempdir_in(c.root())
        .unwrap()
}

fn verify(args: &[&str], set: &Path, as_server: bool) -> Output {
    let mut cmd = opskit_testkit::signing::command(bin("verify-backup"));
    cmd.args(args)
        .arg(set)
        .env_remove("OPSKIT_AGE_IDENTITY")
        .env_remove("OPSKIT_LOG");
    if as_server {
        cluster().as_server_user(&mut cmd);
    }
    run(&mut cmd)
}

fn base_set(db: &opskit_testkit::TestDb, dest: &Path, extra: &[&str]) -> PathBuf {
    let out = {
        let _one = opskit_testkit::pg::base_backup_lock();
        run(pgbackup(cluster(), db, dest).arg("--physical").args(extra))
    };
    assert_eq!(out.code, 0, "{}", out.stderr);
    PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap())
}

#[test]
fn an_encrypted_base_set_verifies_without_its_key_and_replays_with_it() {
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE ledger AS SELECT g AS id, md5(g::text) AS memo FROM generate_series(1, 4321) g",
    );
    let dir = shared_dir();
    let key = Key::new(dir.path(), "oncall.key");
    let set = base_set(
        &db,
        &dir.path().join("backups"),
        &["--encrypt-to", &key.public],
    );
    assert!(
        set.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(&format!("{}-base-", db.name)),
        "{}",
        set.display()
    );
    assert_eq!(
        names(&set),
        [
            "MANIFEST.json",
            "MANIFEST.json.minisig",
            "SHA256SUMS",
            "backup_manifest",
            "base.tar.zst.age"
        ]
    );
    let manifest = fs::read_to_string(set.join("MANIFEST.json")).unwrap();
    assert!(!manifest.contains("ledger"), "{manifest}");
    // Kept plain for the next incremental: file names, sizes, checksums,
    // nothing from inside the database.
    let kept = fs::read_to_string(set.join("backup_manifest")).unwrap();
    assert!(kept.contains("\"PostgreSQL-Backup-Manifest-Version\""));
    let memo = c.query(&db.name, "SELECT memo FROM ledger WHERE id = 1")[0].clone();
    assert!(!kept.contains("ledger") && !kept.contains(&memo));
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m["physical"]["file"], "base.tar.zst.age");
    assert!(
        m["physical"]["start_wal"].as_str().unwrap().len() == 24,
        "{m}"
    );
    assert_eq!(m["physical"]["superuser"], opskit_testkit::pg::SUPERUSER);

    // Without the identity: checksums and the age header only.
    let out = verify(&[], &set, false);
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.events("verify")[0]["depth"], "quick");
    // With it: the tar against its backup_manifest, and a replay that
    // reads the rows.
    c.give(dir.path());
    let id = key.identity.to_str().unwrap();
    let scratch = dir.path().join("scratch");
    let out = verify(
        &[
            "--identity",
            id,
            "--replay",
            "--scratch",
            scratch.to_str().unwrap(),
        ],
        &set,
        true,
    );
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.events("verify")[0]["depth"], "restore");
    assert_eq!(out.check("backup_manifest")["ok"], true);
    assert_eq!(out.check("verifybackup")["ok"], true);
    assert_eq!(out.check("replay")["ok"], true);
    let read = out.check("tables_readable");
    let detail = read["detail"].as_str().unwrap();
    let rows: u64 = detail
        .split(", ")
        .find_map(|p| p.strip_suffix(" rows"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rows >= 4321, "{detail}");
    assert!(
        names(&scratch).is_empty(),
        "the scratch cluster is removed: {:?}",
        names(&scratch)
    );
}

#[test]
fn a_damaged_base_set_is_caught_and_never_restored() {
    let c = cluster();
    let db = c.create_db();
    let dir = shared_dir();
    let set = base_set(&db, &dir.path().join("backups"), &[]);
    let file = set.join("base.tar.zst");
    let mut bytes = fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&file, bytes).unwrap();
    let out = verify(&[], &set, false);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.check("sha256")["ok"], false);
    // Named on purpose, past verification: unpacking checks the sha256 and
    // leaves no data directory.
    let pgdata = dir.path().join("restored");
    let out = run(opskit_testkit::signing::command(bin("walarchive"))
        .args(["restore", "--immediate", "--root"])
        .arg(dir.path().join("backups"))
        .arg("--set")
        .arg(&set)
        .arg("--pgdata")
        .arg(&pgdata));
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("base.tar.zst: ") && out.stderr.contains("was removed"),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists(), "a half data directory was left");
}

#[test]
fn a_role_without_replication_is_refused_clearly_and_leaves_nothing() {
    let c = cluster();
    let db = c.create_db();
    c.query(
        "postgres",
        "DO $$ BEGIN CREATE ROLE opskit_norepl LOGIN PASSWORD 'norepl'; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    let url = format!(
        "postgresql://opskit_norepl:norepl@127.0.0.1:{}/{}",
        c.port(),
        db.name
    );
    let dest = tempfile::tempdir().unwrap();
    let out = run(opskit_testkit::signing::command(bin("pgbackup"))
        .args(["--physical", "--dest"])
        .arg(dest.path())
        .args(["--db", &url])
        .env_remove("DATABASE_URL"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        // 15: "must be superuser or replication role"; 16+: "Only roles
        // with the REPLICATION attribute".
        out.stderr.contains("pg_basebackup failed")
            && out.stderr.to_lowercase().contains("replication"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains(":norepl@"),
        "the password shows: {}",
        out.stderr
    );
    let left: Vec<String> = names(dest.path())
        .into_iter()
        .filter(|n| n != ".opskit.lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// A long base backup on a busy server: pg_basebackup fetches the WAL at
/// the end (`-X fetch`), and checkpoints in between recycle segments.
/// pgbackup holds them with a temporary replication slot for the run.
/// (pg_basebackup is slowed to 8 MB/s by a wrapper so that the writes and
/// checkpoints fall inside the backup.)
#[test]
fn checkpoints_during_a_long_base_backup_do_not_take_its_wal() {
    let c = cluster();
    let db = c.create_db();
    c.query(&db.name, "CREATE TABLE churn (x text)");
    let dir = shared_dir();
    let slow = dir.path().join("bin");
    fs::create_dir(&slow).unwrap();
    let wrapper = slow.join("pg_basebackup");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec {} \"$@\" --max-rate=8M\n",
            c.bindir().join("pg_basebackup").display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let dest = dir.path().join("backups");
    let _one = opskit_testkit::pg::base_backup_lock();
    let mut child = opskit_testkit::signing::command(bin("pgbackup"))
        .args(["--physical", "--dest"])
        .arg(&dest)
        .args(["--db", &db.url, "--pg-bindir"])
        .arg(&slow)
        .env_remove("DATABASE_URL")
        .env_remove("OPSKIT_LOG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while c.query(
        "postgres",
        "SELECT count(*) FROM pg_stat_progress_basebackup WHERE phase = 'streaming database files'",
    )[0] == "0"
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the backup never started"
        );
        if child.try_wait().unwrap().is_some() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "pgbackup ended early: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The run's temporary slot holds the WAL; healthcheck does not count
    // it as an abandoned slot.
    let held = c.query(
        "postgres",
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'opskit_base_%' AND temporary",
    );
    assert_eq!(held, ["1"]);
    let health = run(std::process::Command::new(bin("healthcheck"))
        .arg(&db.url)
        .env_remove("DATABASE_URL"));
    let values = &health.events("check")[0]["values"];
    assert_eq!(values["inactive_slots"], 0, "{values}");
    let start = c.query("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0].clone();
    for _ in 0..4 {
        c.query(
            &db.name,
            "INSERT INTO churn SELECT repeat('c', 500) FROM generate_series(1, 2000)",
        );
        c.query("postgres", "SELECT pg_switch_wal()");
        c.query("postgres", "CHECKPOINT");
    }
    let now = c.query("postgres", "SELECT pg_walfile_name(pg_current_wal_lsn())")[0].clone();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(now[8..] > start[8..], "{start}..{now}: no segment went by");
    let set = sets(&dest).pop().unwrap();
    let out = verify(&[], &set, false);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let slots = c.query(
        "postgres",
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'opskit_base_%'",
    );
    assert_eq!(slots, ["0"], "the temporary slot outlived the run");
}
