//! The failover drill (#31): a base set read from the standby; writes;
//! the primary is killed and the standby promoted (timeline 2); writes go
//! on there. A restore to a time after the promotion brings back every row
//! committed up to it, through the `.history` file and the new timeline; a
//! restore to a time before the failure brings back timeline 1's rows.
//! verify-backup's and healthcheck's WAL checks follow the new timeline,
//! and prune keeps what the sets of both timelines need.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opskit_testkit::Cluster;
use opskit_testkit::drill::{Drill, archive_now, utc_now};
use opskit_testkit::pg::pair::{pair, wait_for};
use opskit_testkit::tools::{Output, bin, run};

fn ok(out: &Output, what: &str) {
    assert_eq!(out.code, 0, "{what}:\n{}\n{}", out.stdout, out.stderr);
}

/// `n` rows, each in its own transaction; the last id.
fn insert(c: &Cluster, db: &str, n: usize, note: &str) -> i64 {
    let mut cl = c.client(db);
    let mut last = 0;
    for _ in 0..n {
        last = cl
            .query_one(
                "INSERT INTO orders (note) VALUES ($1) RETURNING id",
                &[&note],
            )
            .unwrap()
            .get(0);
    }
    last
}

/// The time now on `c`, between two commits.
fn now(c: &Cluster) -> String {
    std::thread::sleep(Duration::from_millis(20));
    let t = utc_now(c);
    std::thread::sleep(Duration::from_millis(20));
    t
}

/// (count, max id) of the rows with id up to `last`, on the live server:
/// exactly what a recovery to a time just after `last` committed holds.
fn committed_upto(c: &Cluster, db: &str, last: i64) -> (i64, i64) {
    let r = c.query(
        db,
        &format!("SELECT count(*) || ' ' || max(id) FROM orders WHERE id <= {last}"),
    );
    let mut it = r[0].split(' ').map(|v| v.parse::<i64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn recover(d: &Drill, t: &str, side: &Path) -> (i64, i64) {
    let (out, port) = d.recover_to(t, side);
    ok(&out, &format!("restore-system.sh --to {t}"));
    let rows = d.side_orders(side, port);
    d.stop_side(side);
    fs::remove_dir_all(side).unwrap();
    rows
}

fn base_set(d: &Drill, from: &Cluster) -> PathBuf {
    let set = d.take_base(from);
    // Recorded as verified: restores start from verified sets only.
    let out = run(d.tool("verify-backup").arg("--record").arg(&set));
    ok(&out, "verify-backup --record");
    set
}

fn wal_check(d: &Drill, set: &Path) -> serde_json::Value {
    let out = run(d.tool("verify-backup").arg("--quick").arg(set));
    ok(&out, "verify-backup --quick");
    out.check("wal")
}

#[test]
fn failover_drill_restores_either_side_of_the_promotion() {
    let p = pair();
    let (primary, standby) = (p.primary, p.standby);
    let d = Drill::on(primary);
    d.archive_from(standby);
    primary.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text, \
         at timestamptz NOT NULL DEFAULT clock_timestamp())",
    );
    insert(primary, &d.db, 200, "before the base set");
    p.wait_replayed();
    let first = base_set(&d, standby);

    // Timeline 1, then a time T1 before the failure.
    let last1 = insert(primary, &d.db, 150, "timeline 1");
    let t1 = now(primary);
    insert(primary, &d.db, 100, "timeline 1, after T1");
    p.wait_replayed();
    let rows1 = committed_upto(standby, &d.db, last1);
    assert_eq!(rows1, (350, last1));

    // The primary dies; the standby is promoted and takes the writes.
    primary.kill();
    standby.promote();
    wait_for("the promotion", || {
        standby.query("postgres", "SELECT pg_is_in_recovery()")[0] == "f"
    });
    let tli = standby.query(
        "postgres",
        "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
    )[0]
    .clone();
    assert_eq!(tli, "00000002");
    let last2 = insert(standby, &d.db, 120, "timeline 2");
    let t2 = now(standby);
    insert(standby, &d.db, 80, "timeline 2, after T2");
    archive_now(standby);
    let rows2 = committed_upto(standby, &d.db, last2);
    assert_eq!(
        rows2.0,
        350 + 100 + 120,
        "every timeline 1 row reached the standby"
    );

    // opskit now talks to the new primary.
    d.set("DATABASE_URL", &standby.url(&d.db));
    d.set("OPSKIT_PGDATA", &standby.data().display().to_string());
    let (stop, start) = standby.stop_start_commands();
    d.set("OPSKIT_PG_STOP", &stop);
    d.set("OPSKIT_PG_START", &start);

    // The archive holds both timelines and the history file between them.
    assert!(
        d.root()
            .join(format!("wal/{tli}/{tli}.history.sha256"))
            .exists()
    );
    let out =
        run(std::process::Command::new(bin("healthcheck"))
            .arg(format!("wal:{}", d.root().display())));
    ok(&out, "healthcheck wal:");
    let check = &out.events("check")[0];
    assert_eq!(check["values"]["timelines"], 2, "{check}");
    let w = wal_check(&d, &first);
    assert_eq!(w["ok"], true, "{w}");
    assert!(
        w["detail"].as_str().unwrap().contains("timelines [1, 2]"),
        "{w}"
    );

    // After the promotion: every row committed up to T2, across timelines.
    assert_eq!(recover(&d, &t2, &d.dir.join("side2")), rows2);
    // Before the failure: timeline 1's rows up to T1, none after.
    assert_eq!(recover(&d, &t1, &d.dir.join("side1")), rows1);

    // A base set on timeline 2; keeping both, the first still has every
    // segment it needs; keeping the newest, timeline 1's older WAL goes
    // but never the history file nor the kept set's segments.
    let second = base_set(&d, standby);
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(second.join("MANIFEST.json")).unwrap()).unwrap();
    assert_eq!(m["physical"]["timeline"], 2);
    assert_eq!(m["physical"]["source"], "primary");
    let ok_prune = |keep: &str| {
        let out = run(d.tool("prune").arg(d.root()).args(["--keep-last", keep]));
        ok(&out, &format!("prune --keep-last {keep}"));
    };
    ok_prune("2");
    assert!(first.exists() && second.exists());
    assert_eq!(wal_check(&d, &first)["ok"], true);
    ok_prune("1");
    assert!(!first.exists() && second.exists());
    assert_eq!(wal_check(&d, &second)["ok"], true);
    assert!(
        d.root()
            .join(format!("wal/{tli}/{tli}.history.sha256"))
            .exists()
    );
}
