//! The recovery window (#32): its newest point is the last transaction in
//! the archive, read from the WAL when it was archived, and it is exact: a
//! recovery to that very time finds the last committed row, and one second
//! later is refused as beyond the archive, before anything is written.

use std::fs;
use std::process::Command;

use chrono::{DateTime, Utc};
use opskit_testkit::drill::{Drill, utc_now};
use opskit_testkit::s3::s3;
use opskit_testkit::tools::run;
use opskit_testkit::wal::archiving_cluster;

fn time(v: &serde_json::Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

#[test]
fn the_newest_recoverable_point_is_the_last_archived_commit_to_the_microsecond() {
    let d = Drill::on(archiving_cluster());
    let c = d.c;
    c.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text); \
         INSERT INTO orders (note) SELECT 'before the base backup' FROM generate_series(1, 100)",
    );
    // Before the base set, which then carries max_prepared_transactions
    // (a setting raised after the set is the last step's own case).
    forged_commit_in_a_prepared_transactions_name(&d);
    let set = d.take_base(c).display().to_string();

    // Before it is verified, the base set starts no range.
    let out = run(d
        .tool("walarchive")
        .args(["window", "--root"])
        .arg(d.root()));
    assert!(out.code == 0, "{}", out.stderr);
    let w = &out.events("window")[0];
    assert_eq!(w["pitr"], serde_json::json!([]), "{w}");
    assert_eq!(w["bases_unusable"], 1, "{w}");
    let out = run(d.tool("verify-backup").arg("--record").arg(&set));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);

    // Three commits; the last one is what the window must end at.
    for i in 1..=3 {
        c.query(
            &d.db,
            &format!("INSERT INTO orders (note) VALUES ('row {i}')"),
        );
    }
    let before_last = utc_now(c);
    c.query(&d.db, "INSERT INTO orders (note) VALUES ('the last row')");
    let last_id = c.query(&d.db, "SELECT max(id) FROM orders")[0].clone();
    d.archive_now();
    let after = utc_now(c);

    let out = run(d
        .tool("walarchive")
        .args(["window", "--root"])
        .arg(d.root()));
    assert!(out.code == 0, "{}", out.stderr);
    let w = out.events("window")[0].clone();
    assert_eq!(w["base_sets"], 1, "{w}");
    let range = &w["pitr"][0];
    let newest = time(&range["to"]);
    assert!(
        time(&serde_json::json!(before_last)) < newest && newest <= time(&serde_json::json!(after)),
        "the newest point {newest} is the last commit, between {before_last} and {after}: {w}"
    );
    assert_eq!(w["newest"], range["to"], "{w}");
    let table = run(d
        .tool("walarchive")
        .args(["window", "--table", "--root"])
        .arg(d.root()));
    assert!(table.code == 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("PITR:  any time from")
            && table.stdout.contains("(timeline 1, 1 base set(s)"),
        "{}",
        table.stdout
    );
    assert!(
        !table.stdout.contains('{'),
        "a table, no records: {}",
        table.stdout
    );

    // Recovering to exactly that time brings the last committed row back.
    let at = opskit::window::show_time(newest);
    assert!(
        table.stdout.contains(&at),
        "the table shows {at}: {}",
        table.stdout
    );
    let side = d.dir.join("side");
    let (out, port) = d.recover_to(&at, &side);
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("is the last transaction archived: recovery stops after its record at"),
        "{}",
        out.stderr
    );
    let (count, max) = d.side_orders(&side, port);
    assert_eq!(max.to_string(), last_id, "the last committed row is there");
    assert_eq!(count, 105, "100 + the prepared one + 4");
    d.stop_side(&side);
    fs::remove_dir_all(&side).unwrap();

    // One second later is beyond the archive: refused up front, nothing written.
    let later = opskit::window::show_time(newest + chrono::Duration::seconds(1));
    let too_late = d.dir.join("too-late");
    let (out, _) = d.recover_to(&later, &too_late);
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "the archive ends before {later}: its newest recoverable point is {at}"
        )),
        "{}",
        out.stderr
    );
    assert!(!too_late.exists(), "nothing written");

    // healthcheck's wal: check shows the same window, as fields and metrics.
    let prom = d.dir.join("health.prom");
    let out = run(d
        .tool("healthcheck")
        .args(["--prometheus"])
        .arg(&prom)
        .arg(format!("wal:{}", d.root().display()))
        .env("DATABASE_URL", c.url(&d.db)));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let chk = &out.events("check")[0];
    let f = &chk["values"];
    assert_eq!(f["window_newest"], at.as_str(), "{chk}");
    assert_eq!(f["archive_timeout_s"], 0.0, "{chk}");
    assert_eq!(f["window_overdue_s"], 0.0, "{chk}");
    assert!(f["window_width_s"].as_f64().unwrap() > 0.0, "{chk}");
    let text = fs::read_to_string(&prom).unwrap();
    for m in [
        "opskit_recovery_window_newest_age_seconds",
        "opskit_recovery_window_width_seconds",
        "opskit_recovery_window_overdue_seconds",
    ] {
        assert!(text.contains(&format!("\n{m}{{")), "{m} in\n{text}");
    }
    // A rule on the window's age goes off like any other.
    let out = run(Command::new(opskit_testkit::bin("healthcheck"))
        .args(["--warn", "window_age_s >= 0"])
        .arg(format!("wal:{}", d.root().display())));
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);

    bucket_window(&d, &set, &at);
    recovered_past_a_raised_setting(&d);
}

/// Production restarted with a setting raised after the base set (here
/// max_prepared_transactions 5 -> 7; max_connections in life): a recovery
/// with the set's own value pauses once it replays that change ("recovery
/// has paused", for ever, on 14+). restore-pitr.sh restarts the recovered
/// cluster with production's values and reaches the newest point; it
/// waited for ever before. Then a base set whose configuration says less
/// than production runs with (lowered, not yet restarted): the copy starts
/// with production's values from the set's control file (walarchive
/// restore's start options) and needs no restart (it stopped at its start
/// before).
fn recovered_past_a_raised_setting(d: &Drill) {
    let c = d.c;
    c.query("postgres", "ALTER SYSTEM SET max_prepared_transactions = 7");
    c.restart();
    recover_with_production_settings(d, Some("paused"));
    c.query("postgres", "ALTER SYSTEM SET max_prepared_transactions = 3");
    let set = d.take_base(c);
    let out = run(d.tool("verify-backup").arg("--record").arg(&set));
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    recover_with_production_settings(d, None);
}

/// restore-pitr.sh --to-latest after a new row: the recovery `what`
/// (paused; None: it started with enough) for max_prepared_transactions,
/// and went on with production's 7.
fn recover_with_production_settings(d: &Drill, what: Option<&str>) {
    let c = d.c;
    let what_name = what.unwrap_or("started");
    c.query(
        &d.db,
        &format!("INSERT INTO orders (note) VALUES ('{what_name}')"),
    );
    let last_id = c.query(&d.db, "SELECT max(id) FROM orders")[0].clone();
    d.archive_now();
    let side = Side(d.dir.join(format!("side-{what_name}")));
    let port = opskit_testkit::pg::free_port();
    let script = d.dir.join("scripts").join("restore-pitr.sh");
    // A bound, so that a recovery that waits for ever fails the test.
    let out = run(d
        .cmd(std::path::Path::new("timeout"))
        .args(["120"])
        .arg(&script)
        .args(["--to-latest", "--port", &port.to_string(), "--into"])
        .arg(&side.0));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    match what {
        Some(w) => assert!(
            out.stderr.contains(&format!(
                "recovery {w}: production ran with higher settings"
            )) && out.stderr.contains("max_prepared_transactions=7"),
            "{}",
            out.stderr
        ),
        None => assert!(
            !out.stderr.contains("production ran with higher settings"),
            "{}",
            out.stderr
        ),
    }
    let (_, max) = d.side_orders(&side.0, port);
    assert_eq!(max.to_string(), last_id, "the newest row");
    let mut cl = postgres::Config::new()
        .host_path(&side.0)
        .port(port)
        .user(opskit_testkit::pg::SUPERUSER)
        .dbname("postgres")
        .connect(postgres::NoTls)
        .unwrap();
    let v: String = cl
        .query_one("SHOW max_prepared_transactions", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, "7");
}

/// A recovered cluster's data directory: stopped and removed when the
/// test is done with it, whatever failed.
struct Side(std::path::PathBuf);

impl Drop for Side {
    fn drop(&mut self) {
        if self.0.join("postmaster.pid").exists() {
            let c = archiving_cluster();
            let mut pg_ctl = Command::new(c.bindir().join("pg_ctl"));
            let _ = c
                .as_server_user(&mut pg_ctl)
                .arg("-D")
                .arg(&self.0)
                .args(["stop", "-m", "immediate", "-w"])
                .status();
        }
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Any database user may name a prepared transaction, and pg_waldump
/// prints the name as given, newlines included: a name that reads as a
/// commit far in the future must not become the segment's last
/// transaction (the archive would then claim to reach 2099, restore would
/// stop at a position the user chose, and the stale-window alert would go
/// quiet).
fn forged_commit_in_a_prepared_transactions_name(d: &Drill) {
    let c = d.c;
    c.query("postgres", "ALTER SYSTEM SET max_prepared_transactions = 5");
    c.restart();
    let seg = c.query(
        "postgres",
        "SELECT pg_walfile_name(pg_current_wal_insert_lsn())",
    )[0]
    .clone();
    let at = c.query("postgres", "SELECT pg_current_wal_insert_lsn() + 16")[0].clone();
    let gid = format!(
        "x\nrmgr: Transaction len (rec/tot):     34/    34, tx:        999, lsn: {at}, prev 0/00000000, desc: COMMIT 2099-01-01 00:00:00.000000 UTC"
    );
    c.query(
        &d.db,
        &format!(
            "BEGIN; INSERT INTO orders (note) VALUES ('prepared'); PREPARE TRANSACTION '{}'",
            gid.replace('\'', "''")
        ),
    );
    // Archived while the forged line is the segment's last.
    d.archive_now();
    c.query(
        &d.db,
        &format!("COMMIT PREPARED '{}'", gid.replace('\'', "''")),
    );
    let side = fs::read_to_string(
        d.root()
            .join("wal")
            .join(&seg[..8])
            .join(format!("{seg}.sha256")),
    )
    .unwrap();
    let first = side.lines().next().unwrap();
    assert!(
        !first.contains("2099"),
        "the forged commit was recorded: {first}"
    );
}

/// The bucket's window, beside the root's: the base set pushed there and
/// the WAL copied by push-wal reach the same newest point.
fn bucket_window(d: &Drill, set: &str, at: &str) {
    let bucket = s3().bucket("window");
    let url = format!("s3://{bucket}/app");
    let offsite = |args: &[&str]| {
        let mut cmd = Command::new(opskit_testkit::bin("offsite"));
        s3().configure(&mut cmd);
        cmd.args(args).env(
            "OPSKIT_SIGNING_PUBKEYS",
            &opskit_testkit::signing::keys().public,
        );
        run(&mut cmd)
    };
    let root = d.root().display().to_string();
    let out = offsite(&["push", &url, "--allow-unencrypted", set]);
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let out = offsite(&["push-wal", &url, "--root", &root, "--allow-unencrypted"]);
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let out = offsite(&["window", &url, "--root", &root]);
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let w = out.events("window");
    assert_eq!(w.len(), 2, "{}", out.stdout);
    assert_eq!(
        (&w[0]["location"], &w[1]["location"]),
        (&"local".into(), &"remote".into())
    );
    assert_eq!(w[1]["base_sets"], 1, "{}", w[1]);
    assert_eq!(
        w[1]["pitr"][0]["to"], w[0]["pitr"][0]["to"],
        "{}",
        out.stdout
    );
    let table = offsite(&["window", &url, "--root", &root, "--table"]);
    assert!(table.code == 0, "{}", table.stderr);
    assert!(
        table.stdout.contains("(remote):") && table.stdout.matches(at).count() == 2,
        "{}",
        table.stdout
    );
    forged_in_the_bucket(&bucket, &w[1], set, |args| {
        let mut all = vec!["window", url.as_str(), "--root", root.as_str()];
        all.extend_from_slice(args);
        offsite(&all)
    });
}

/// Whoever holds the bucket's keys (they live on the server) writes a
/// checksum file whose last transaction is in 2099, and then a set's
/// manifest changed after it was signed: `offsite window` showed both as
/// the truth (a window to 2099, a set that may be gone). Each is now named
/// and not believed; `--allow-unsigned` takes an unsigned one only where
/// no key is given.
fn forged_in_the_bucket(
    bucket: &str,
    remote: &serde_json::Value,
    set: &str,
    window: impl Fn(&[&str]) -> opskit_testkit::Output,
) {
    let seg = remote["pitr"][0]["newest_segment"].as_str().unwrap();
    let key = format!("app/wal/{}/{seg}.sha256", &seg[..8]);
    let real = s3().get(bucket, &key);
    let line = String::from_utf8_lossy(&real)
        .lines()
        .next()
        .unwrap()
        .to_string();
    let mut words: Vec<&str> = line.split(' ').take(3).collect();
    words.push("xact=2099-01-01T00:00:00.000000Z@0/FFFFFF0");
    s3().put(bucket, &key, format!("{}\n", words.join(" ")).as_bytes());
    let out = window(&[]);
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!out.stdout.contains("2099"), "{}", out.stdout);
    assert!(
        out.stderr.contains(&format!("{seg}.sha256: not signed"))
            && out.stderr.contains("its last transaction is not known"),
        "{}",
        out.stderr
    );
    s3().put(bucket, &key, &real);

    let name = std::path::Path::new(set)
        .file_name()
        .unwrap()
        .to_string_lossy();
    let key = format!("app/{name}/MANIFEST.json");
    let real = s3().get(bucket, &key);
    let forged = String::from_utf8_lossy(&real).replacen("\"set\"", "\"set\" ", 1);
    assert_ne!(forged.as_bytes(), &real[..]);
    s3().put(bucket, &key, forged.as_bytes());
    let out = window(&[]);
    assert!(out.code == 0, "{}\n{}", out.stdout, out.stderr);
    let w = out.events("window");
    assert_eq!(w[1]["base_sets"], 0, "{}", w[1]);
    assert!(
        out.stderr.contains(&format!("{name}: ")) && out.stderr.contains("left out of the window"),
        "{}",
        out.stderr
    );
    s3().put(bucket, &key, &real);
    let out = window(&[]);
    assert_eq!(out.events("window")[1]["base_sets"], 1, "{}", out.stderr);
}
