//! A primary with a streaming standby (#31): base sets read from the
//! standby say so and replay without reaching production; both servers
//! archive the same WAL into one root; a dump cancelled by replay is named
//! with its remedy; healthcheck's replication checks go WARNING and
//! CRITICAL when the standby stops streaming, a slot holds WAL back or
//! replay lags, and back to OK.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opskit_testkit::drill::Drill;
use opskit_testkit::pg::pair::{Pair, SLOT, pair, wait_for};
use opskit_testkit::tools::{Output, bin, run};

fn ok(out: &Output, what: &str) {
    assert_eq!(out.code, 0, "{what}:\n{}\n{}", out.stdout, out.stderr);
}

fn manifest(set: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap()
}

/// A file of a base set's (unencrypted) tar.
fn file_in_base(set: &Path, name: &str) -> Option<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(r#"zstd -dcq "$1" | tar -xOf - "$2" 2>/dev/null"#)
        .arg("sh")
        .arg(set.join("base.tar.zst"))
        .arg(name)
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn server_log(c: &opskit_testkit::Cluster) -> String {
    fs::read_to_string(c.root().join("server.log")).unwrap_or_default()
}

#[test]
fn a_base_set_read_from_the_standby_replays_without_reaching_the_primary() {
    let Pair { primary, standby } = pair();
    let d = Drill::on(primary);
    d.archive_from(standby);
    primary.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text); \
         INSERT INTO orders (note) SELECT 'on the primary' FROM generate_series(1, 2000)",
    );
    pair().wait_replayed();

    let set = d.take_base(standby);
    let m = manifest(&set);
    assert_eq!(m["physical"]["source"], "standby", "{}", m["physical"]);
    assert_eq!(m["physical"]["timeline"], 1);

    // The copy carries the standby's own settings: how it reaches the
    // primary and its slot, and standby.signal.
    let auto = file_in_base(&set, "postgresql.auto.conf").expect("postgresql.auto.conf");
    assert!(auto.contains("primary_conninfo"), "{auto}");
    assert!(auto.contains("primary_slot_name"), "{auto}");
    assert!(file_in_base(&set, "standby.signal").is_some());

    // The replay neither streams from the primary nor asks for its slot,
    // and ends in seconds (it used to wait for WAL for 10 minutes).
    let before = server_log(primary).len();
    let started = Instant::now();
    let out = run(&mut d.replay(&set, &d.dir.join("scratch")));
    ok(&out, "verify-backup --replay");
    assert_eq!(out.check("replay")["ok"], true, "{}", out.stdout);
    assert!(started.elapsed() < Duration::from_secs(120));
    let log = server_log(primary);
    let since = &log[before.min(log.len())..];
    assert!(
        !since.contains("replication slot") && !since.contains("replication connection"),
        "the primary heard from the scratch cluster:\n{since}"
    );
    let senders = primary.query(
        "postgres",
        "SELECT string_agg(application_name, ',') FROM pg_stat_replication",
    );
    assert_eq!(senders, ["standby"]);

    // Both servers archive into the root: the standby's copies of the
    // segments the primary archived are identical, so they are accepted.
    d.archive_now();
    let seg =
        primary.query("postgres", "SELECT last_archived_wal FROM pg_stat_archiver")[0].clone();
    wait_for("the standby to archive the same segment", || {
        standby.query(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )[0] >= seg
    });
    for (who, c) in [("primary", primary), ("standby", standby)] {
        let failed = c.query("postgres", "SELECT failed_count FROM pg_stat_archiver");
        assert_eq!(
            failed,
            ["0"],
            "{who}'s archive_command failed:\n{}",
            server_log(c)
        );
    }

    // The nightly procedures with OPSKIT_BACKUP_FROM: both kinds of set
    // are read from the standby, DATABASE_URL stays the primary's.
    d.set("OPSKIT_BACKUP_FROM", &standby.url(&d.db));
    let port = format!(":{}", standby.port());
    for (args, part) in [(&["--physical"][..], "physical"), (&[][..], "database")] {
        let out = run(d
            .script("backup-system.sh")
            .args(args)
            .env("OPSKIT_PITR_STATE_DIR", d.dir.join("pitr-state"))
            .env("OPSKIT_METRICS_DIR", d.dir.join("metrics"))
            .env("OPSKIT_RETENTION", "--keep-last 9"));
        ok(&out, &format!("backup-system.sh {args:?}"));
        assert!(
            out.stderr
                .contains("reading the backup from OPSKIT_BACKUP_FROM")
        );
        let newest = fs::read_dir(d.root())
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join("MANIFEST.json").exists() && manifest(p)[part].is_object())
            .max()
            .unwrap();
        let m = manifest(&newest);
        let server = m[part]["server"].as_str().unwrap();
        assert!(server.ends_with(&port), "{part} read from {server}");
        if part == "physical" {
            assert_eq!(m["physical"]["source"], "standby");
        }
    }
}

#[test]
fn a_dump_cancelled_by_replay_names_the_cause_and_the_settings_that_prevent_it() {
    let Pair { primary, standby } = pair();
    let db = primary.create_db();
    primary.query(
        &db.name,
        "CREATE TABLE a (id int, pad text); \
         INSERT INTO a SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 400000) g",
    );
    pair().wait_replayed();
    let root = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin("pgbackup"))
        .envs(opskit_testkit::signing::keys().env())
        .arg("--dest")
        .arg(root.path())
        .arg("--db")
        .arg(standby.url(&db.name))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // pg_dump holds `a` on the standby: stop it there, as a long dump is
    // still at work when replay needs the table.
    let locked = "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
                  WHERE c.relname = 'a' AND l.mode = 'AccessShareLock' AND l.granted";
    let mut pg_dump = None;
    wait_for("pg_dump to lock the table on the standby", || {
        if standby.query(&db.name, locked)[0] == "0" {
            return false;
        }
        let out = Command::new("pgrep")
            .args(["-P", &child.id().to_string(), "pg_dump"])
            .output()
            .unwrap();
        pg_dump = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<i32>()
            .ok();
        pg_dump.is_some()
    });
    let pid = pg_dump.unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success()
    );
    // The primary drops the table: replay waits for the dump's lock for
    // max_standby_streaming_delay (1s here), then cancels the dump.
    primary.query(&db.name, "DROP TABLE a");
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "pgbackup did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("error:") && l.contains("(a recovery conflict)"))
        .unwrap_or_else(|| panic!("no recovery conflict named:\n{stderr}"));
    for word in ["hot_standby_feedback", "max_standby_streaming_delay"] {
        assert!(line.contains(word), "{line}");
    }
    // Nothing left behind: no set, no staging directory.
    let left: Vec<_> = fs::read_dir(root.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".opskit.lock")
        .collect();
    assert!(left.is_empty(), "left in the root: {left:?}");
}

fn health(c: &opskit_testkit::Cluster, db: &str, extra: &[&str]) -> (i32, serde_json::Value) {
    let out = run(Command::new(bin("healthcheck"))
        .arg(c.url(db))
        .args(extra)
        .env_remove("DATABASE_URL"));
    let check = out
        .events("check")
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("no check record:\n{}\n{}", out.stdout, out.stderr));
    (out.code, check)
}

fn values(check: &serde_json::Value) -> &serde_json::Value {
    &check["values"]
}

#[test]
fn replication_checks_go_warning_and_critical_and_back() {
    let p = pair();
    let (primary, standby) = (p.primary, p.standby);
    // Alone: this test stops the standby's streaming.
    let db = primary.create_db_alone();
    p.wait_replayed();

    // Healthy: the standby streams, the primary has it and its slot.
    let (code, s) = health(standby, &db.name, &[]);
    assert_eq!(code, 0, "{s}");
    assert_eq!(values(&s)["role"], "replica");
    assert_eq!(values(&s)["streaming"], true);
    assert_eq!(values(&s)["wal_receiver_status"], "streaming");
    let (code, pr) = health(primary, &db.name, &[]);
    assert_eq!(code, 0, "{pr}");
    assert_eq!(values(&pr)["replicas"], 1);
    assert_eq!(values(&pr)["streaming_replicas"], 1);
    assert_eq!(values(&pr)["slots"], 1);
    assert_eq!(values(&pr)["inactive_slots"], 0);
    assert!(values(&pr)["streaming"].is_null(), "{pr}");
    // A role without pg_monitor does not see the receiver's state: unknown,
    // not a standby that stopped streaming.
    primary.query(
        "postgres",
        "DO $$ BEGIN CREATE ROLE opskit_plain LOGIN PASSWORD 'plain'; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
    );
    p.wait_replayed();
    let out = run(Command::new(bin("healthcheck"))
        .arg(format!(
            "postgresql://opskit_plain:plain@127.0.0.1:{}/{}",
            standby.port(),
            db.name
        ))
        .env_remove("DATABASE_URL"));
    let plain = &out.events("check")[0];
    assert_eq!(out.code, 0, "{plain}");
    assert_eq!(values(plain)["wal_receiver_status"], "hidden", "{plain}");
    assert!(values(plain)["streaming"].is_null(), "{plain}");

    // The standby stops streaming: WARNING there, and its slot on the
    // primary goes inactive: WARNING there, while the primary writes.
    let conninfo = standby.query("postgres", "SHOW primary_conninfo")[0].clone();
    standby.query("postgres", "ALTER SYSTEM SET primary_conninfo = ''");
    standby.query("postgres", "SELECT pg_reload_conf()");
    wait_for("the WAL receiver to stop", || {
        standby.query("postgres", "SELECT count(*) FROM pg_stat_wal_receiver")[0] == "0"
    });
    let (code, s) = health(standby, &db.name, &[]);
    assert_eq!(code, 1, "{s}");
    assert_eq!(values(&s)["streaming"], false);
    assert_eq!(values(&s)["wal_receiver_status"], "stopped");
    assert!(
        s["detail"].as_str().unwrap().contains("streaming == false"),
        "{s}"
    );
    wait_for("the slot to go inactive", || {
        primary.query(
            "postgres",
            &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        )[0] == "f"
    });
    for _ in 0..3 {
        primary.query(
            &db.name,
            "CREATE TABLE IF NOT EXISTS filler (x text); \
             INSERT INTO filler SELECT repeat('w', 1000) FROM generate_series(1, 5000)",
        );
        primary.query("postgres", "SELECT pg_switch_wal()");
    }
    let (code, pr) = health(primary, &db.name, &[]);
    assert_eq!(code, 1, "{pr}");
    assert_eq!(values(&pr)["inactive_slots"], 1);
    assert_eq!(values(&pr)["slot_retained_by"], SLOT);
    let held = values(&pr)["slot_retained_bytes"].as_u64().unwrap();
    assert!(held > 32 << 20, "the slot holds only {held} bytes");
    assert!(
        pr["detail"]
            .as_str()
            .unwrap()
            .contains("1 of 1 replication slots inactive"),
        "{pr}"
    );
    // A size rule for what a slot may hold: CRITICAL.
    let (code, pr) = health(primary, &db.name, &["--crit", "slot_retained_bytes > 32M"]);
    assert_eq!(code, 2, "{pr}");

    // Streaming again: OK on both once the standby has caught up.
    standby.query(
        "postgres",
        &format!("ALTER SYSTEM SET primary_conninfo = '{conninfo}'"),
    );
    standby.query("postgres", "SELECT pg_reload_conf()");
    p.wait_streaming();
    p.wait_replayed();
    wait_for("the slot to be active again", || {
        health(primary, &db.name, &[]).0 == 0
    });
    let (code, s) = health(standby, &db.name, &[]);
    assert_eq!(code, 0, "{s}");

    // Replay paused while the primary writes: the lag in bytes is seen.
    standby.query("postgres", "SELECT pg_wal_replay_pause()");
    primary.query(
        &db.name,
        "INSERT INTO filler SELECT repeat('l', 1000) FROM generate_series(1, 5000)",
    );
    wait_for("the standby to receive what it does not replay", || {
        let (_, s) = health(standby, &db.name, &[]);
        values(&s)["replication_lag_bytes"].as_u64().unwrap_or(0) > 1 << 20
    });
    let (code, s) = health(standby, &db.name, &["--crit", "replication_lag_bytes > 1M"]);
    assert_eq!(code, 2, "{s}");
    let (_, pr) = health(primary, &db.name, &[]);
    assert!(
        values(&pr)["replication_lag_bytes"].as_u64().unwrap() > 1 << 20,
        "{pr}"
    );
    standby.query("postgres", "SELECT pg_wal_replay_resume()");
    p.wait_replayed();
    wait_for("the lag to go", || {
        health(standby, &db.name, &["--crit", "replication_lag_bytes > 1M"]).0 == 0
    });
}
