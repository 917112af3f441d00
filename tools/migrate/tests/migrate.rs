//! migrate against a real PostgreSQL: up/down/target, failures, dirty
//! transaction:false migrations, drift, out-of-order, baseline, takeover
//! from dbmate, and eight migrators at once.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use opskit_testkit::tools::{Output, run};
use opskit_testkit::{Cluster, TestDb, cluster};

mod common;
use common::{migrate, write};

fn three(dir: &Path) {
    write(
        dir,
        "001_users.sql",
        "-- migrate:up\ncreate table users (id int primary key, name text);\n\n-- migrate:down\ndrop table users;\n",
    );
    write(
        dir,
        "002_posts.sql",
        "-- migrate:up\ncreate table posts (id int, user_id int references users);\ninsert into users values (1, 'a');\n-- migrate:down\ndrop table posts;\ndelete from users;\n",
    );
    write(
        dir,
        "003_index.sql",
        "-- migrate:up\ncreate index posts_user on posts (user_id);\n-- migrate:down\ndrop index posts_user;\n",
    );
}

fn versions(c: &Cluster, db: &TestDb) -> Vec<String> {
    c.query(
        &db.name,
        "SELECT version FROM schema_migrations ORDER BY version",
    )
}

fn schema(c: &Cluster, db: &TestDb) -> String {
    c.run_bin("pg_dump", &db.name, &["--schema-only", "--no-owner"])
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn up_down_target_status_and_plan() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());

    let out = run(migrate(&db, dir.path()).args(["plan"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events("plan").len(), 3);
    assert!(
        c.query(&db.name, "SELECT to_regclass('schema_migrations')::text")
            .iter()
            .all(|r| r.is_empty()),
        "plan touched the database"
    );

    let out = run(migrate(&db, dir.path()).args(["up", "--target", "002"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(versions(c, &db), vec!["001", "002"]);
    let recs = out.events("migration");
    assert_eq!(recs.len(), 2);
    assert_eq!(recs[1]["statements"], 2);

    let out = run(migrate(&db, dir.path()).args(["status", "--exit-code"]));
    assert_eq!(out.code, 1, "pending migrations");
    let st = out.events("status");
    assert_eq!(
        st.iter().map(|s| s["applied"] == true).collect::<Vec<_>>(),
        vec![true, true, false]
    );
    assert_eq!(st[0]["checksum_ok"], true);
    assert_eq!(out.summary()["pending"], 1);

    assert_eq!(run(migrate(&db, dir.path()).arg("up")).code, 0);
    assert_eq!(versions(c, &db), vec!["001", "002", "003"]);
    assert_eq!(
        run(migrate(&db, dir.path()).args(["status", "--exit-code"])).code,
        0
    );

    let out = run(migrate(&db, dir.path()).args(["down", "2"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(versions(c, &db), vec!["001"]);
    assert_eq!(c.query(&db.name, "SELECT count(*) FROM users"), vec!["0"]);
    let out = run(migrate(&db, dir.path()).args(["down", "--to", "0"]));
    assert_eq!(out.code, 0);
    assert!(versions(c, &db).is_empty());
}

#[test]
fn a_failing_migration_leaves_the_database_as_it_was_and_names_file_and_line() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    assert_eq!(run(migrate(&db, dir.path()).arg("up")).code, 0);
    let before = schema(c, &db);
    write(
        dir.path(),
        "004_bad.sql",
        "-- a comment\n-- migrate:up\ncreate table t1 (x int);\ninsert into t1 values (1);\nalter table t1 add column y int;\nselect * from no_such_table;\n-- migrate:down\ndrop table t1;\n",
    );
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let m = &out.events("migration")[0];
    assert_eq!(m["ok"], false);
    let msg = m["message"].as_str().unwrap();
    assert!(
        msg.contains("004_bad.sql:6: relation \"no_such_table\" does not exist"),
        "{msg}"
    );
    assert!(msg.contains("statement 4 of the section"), "{msg}");
    assert_eq!(schema(c, &db), before, "the failed migration left changes");
    assert_eq!(versions(c, &db), vec!["001", "002", "003"]);
}

#[test]
fn transaction_false_runs_concurrent_index_builds_and_marks_failures_dirty() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    write(
        dir.path(),
        "004_concurrently.sql",
        "-- migrate:up transaction:false\ncreate index concurrently users_name on users (name);\n\ncreate index concurrently posts_id on posts (id);\n-- migrate:down transaction:false\ndrop index concurrently users_name;\ndrop index concurrently posts_id;\n",
    );
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        c.query(
            &db.name,
            "SELECT count(*) FROM pg_indexes WHERE indexname IN ('users_name', 'posts_id')"
        ),
        vec!["2"]
    );

    // Fails at its second statement: the first stays, the migration is dirty.
    write(
        dir.path(),
        "005_half.sql",
        "-- migrate:up transaction:false\ncreate index concurrently users_id2 on users (id);\ncreate index concurrently broken on no_such (x);\n-- migrate:down\n",
    );
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 1);
    let msg = out.events("migration")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("005_half.sql:3:") && msg.contains("statement 2"),
        "{msg}"
    );
    assert_eq!(
        c.query(
            &db.name,
            "SELECT dirty, failed_statement FROM opskit_migrations WHERE version = '005'"
        ),
        vec!["t|2"]
    );
    // up refuses until a human repairs it.
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 1);
    assert!(
        out.events("validate")[0]["problem"]
            .as_str()
            .unwrap()
            .starts_with("dirty: failed at statement 2")
    );
    c.query(&db.name, "DROP INDEX users_id2");
    let out = run(migrate(&db, dir.path()).args(["repair", "--rolled-back", "005"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    write(
        dir.path(),
        "005_half.sql",
        "-- migrate:up transaction:false\ncreate index concurrently users_id2 on users (id);\n-- migrate:down\n",
    );
    assert_eq!(run(migrate(&db, dir.path()).arg("up")).code, 0);
    assert_eq!(versions(c, &db).last().unwrap(), "005");
    let log = c.query(
        &db.name,
        "SELECT action FROM opskit_migrations_log WHERE version = '005' ORDER BY id",
    );
    assert_eq!(log, vec!["up", "repair-rolled-back", "up"]);
}

#[test]
fn drift_and_out_of_order_are_refused() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    assert_eq!(run(migrate(&db, dir.path()).arg("up")).code, 0);
    // Changed after it was applied (CRLF alone is not a change).
    let body = fs::read_to_string(dir.path().join("002_posts.sql")).unwrap();
    write(dir.path(), "002_posts.sql", &body.replace('\n', "\r\n"));
    assert_eq!(run(migrate(&db, dir.path()).arg("validate")).code, 0);
    write(dir.path(), "002_posts.sql", &body.replace("'a'", "'b'"));
    let out = run(migrate(&db, dir.path()).arg("validate"));
    assert_eq!(out.code, 1);
    assert!(
        out.events("validate")[0]["problem"]
            .as_str()
            .unwrap()
            .contains("changed after it was applied")
    );
    write(
        dir.path(),
        "004_more.sql",
        "-- migrate:up\ncreate table more (x int);\n-- migrate:down\ndrop table more;\n",
    );
    assert_eq!(
        run(migrate(&db, dir.path()).arg("up")).code,
        1,
        "up refuses on drift"
    );
    assert_eq!(versions(c, &db).len(), 3);
    assert_eq!(
        run(migrate(&db, dir.path()).args(["up", "--allow-changed"])).code,
        0
    );
    assert_eq!(
        run(migrate(&db, dir.path()).args(["repair", "--accept-checksum", "002"])).code,
        0
    );
    assert_eq!(run(migrate(&db, dir.path()).arg("validate")).code, 0);

    // A pending migration older than the newest applied.
    write(
        dir.path(),
        "0025_late.sql",
        "-- migrate:up\ncreate table late (x int);\n-- migrate:down\ndrop table late;\n",
    );
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 1);
    assert!(
        out.events("validate")[0]["problem"]
            .as_str()
            .unwrap()
            .contains("out of order")
    );
    assert_eq!(
        run(migrate(&db, dir.path()).args(["up", "--allow-out-of-order"])).code,
        0
    );
    // A file that disappeared.
    fs::remove_file(dir.path().join("004_more.sql")).unwrap();
    let out = run(migrate(&db, dir.path()).arg("validate"));
    assert!(
        out.events("validate")[0]["problem"]
            .as_str()
            .unwrap()
            .contains("file is missing")
    );
}

#[test]
fn takes_over_from_dbmate_and_baselines_an_existing_schema() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    // As dbmate leaves it: its table, 001 applied by hand.
    c.query(&db.name, "CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY); INSERT INTO schema_migrations VALUES ('001'); CREATE TABLE users (id int primary key, name text)");
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events("migration").len(), 2);
    assert_eq!(versions(c, &db), vec!["001", "002", "003"]);
    assert_eq!(
        c.query(&db.name, "SELECT count(*) FROM opskit_migrations"),
        vec!["3"]
    );

    let db2 = c.create_db();
    c.query(&db2.name, "CREATE TABLE users (id int primary key, name text); CREATE TABLE posts (id int, user_id int)");
    let out = run(migrate(&db2, dir.path()).args(["baseline", "002"]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(versions(c, &db2), vec!["001", "002"]);
    assert_eq!(run(migrate(&db2, dir.path()).arg("up")).code, 0);
    assert_eq!(versions(c, &db2), vec!["001", "002", "003"]);
}

#[test]
fn bad_files_are_usage_errors_with_file_and_line() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_x.sql",
        "create table x (a int);\n-- migrate:up\n",
    );
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 64);
    assert!(
        out.stderr.contains("001_x.sql:1: SQL before the first"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 1);
}

#[test]
fn eight_migrators_at_once_apply_each_migration_exactly_once() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    write(
        dir.path(),
        "004_concurrently.sql",
        "-- migrate:up transaction:false\ncreate index concurrently users_name on users (name);\n-- migrate:down transaction:false\ndrop index concurrently users_name;\n",
    );
    // A migration that would fail if run twice.
    write(
        dir.path(),
        "005_once.sql",
        "-- migrate:up\ncreate table once (x int);\ninsert into once values (1);\n-- migrate:down\ndrop table once;\n",
    );
    let children: Vec<_> = (0..8)
        .map(|_| {
            migrate(&db, dir.path())
                .arg("up")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|ch| {
            let o = ch.wait_with_output().unwrap();
            Output {
                code: o.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&o.stdout).into(),
                stderr: String::from_utf8_lossy(&o.stderr).into(),
            }
        })
        .collect();
    for o in &outs {
        assert!(
            o.code == 0
                || o.stderr
                    .contains("another migrate holds the migration lock"),
            "{o:?}"
        );
    }
    let applied: usize = outs.iter().map(|o| o.events("migration").len()).sum();
    assert_eq!(
        applied, 5,
        "each migration applied exactly once across all runs"
    );
    assert_eq!(versions(c, &db), vec!["001", "002", "003", "004", "005"]);
    assert_eq!(c.query(&db.name, "SELECT count(*) FROM once"), vec!["1"]);
}

#[test]
fn lock_wait_gives_up_naming_the_holder() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    let mut holder = c.client(&db.name);
    holder
        .execute(
            "SELECT pg_advisory_lock($1, $2)",
            &[&migrate::LOCK_KEYS.0, &migrate::LOCK_KEYS.1],
        )
        .unwrap();
    let out = run(migrate(&db, dir.path()).args(["up", "--lock-wait", "500ms"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("another migrate holds the migration lock")
            && out.stderr.contains("pid "),
        "{}",
        out.stderr
    );
    drop(holder);
    assert_eq!(
        run(migrate(&db, dir.path()).args(["up", "--lock-wait", "10s"])).code,
        0
    );
}

#[test]
fn lock_timeout_gives_up_and_retries_instead_of_stalling() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    three(dir.path());
    assert_eq!(run(migrate(&db, dir.path()).arg("up")).code, 0);
    write(
        dir.path(),
        "004_alter.sql",
        "-- migrate:up\nalter table users add column z int;\n-- migrate:down\nalter table users drop column z;\n",
    );
    // A long transaction holds the table.
    let mut holder = c.client(&db.name);
    holder
        .batch_execute("BEGIN; LOCK TABLE users IN ACCESS SHARE MODE")
        .unwrap();
    let start = std::time::Instant::now();
    let out = run(migrate(&db, dir.path()).args([
        "up",
        "--lock-timeout",
        "200ms",
        "--lock-retries",
        "1",
    ]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let msg = out.events("migration")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("lock timeout") && msg.contains("55P03"),
        "{msg}"
    );
    assert!(out.stderr.contains("retry 1/1"), "{}", out.stderr);
    assert_eq!(versions(c, &db).len(), 3);
    // Released during the retry pause: the retry succeeds.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(600));
        holder.batch_execute("COMMIT").unwrap();
    });
    let out = run(migrate(&db, dir.path()).args([
        "up",
        "--lock-timeout",
        "200ms",
        "--lock-retries",
        "3",
    ]));
    releaser.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(versions(c, &db).len(), 4);
}

#[test]
fn wait_returns_when_the_database_answers_and_times_out_when_not() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        run(migrate(&db, dir.path()).args(["wait", "--timeout", "5s"])).code,
        0
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = std::time::Instant::now();
    let out = run(Command::new(env!("CARGO_BIN_EXE_migrate")).args([
        "--db",
        &format!("postgres://u:pw@127.0.0.1:{port}/x"),
        "wait",
        "--timeout",
        "1s",
    ]));
    assert_eq!(out.code, 2);
    assert!(start.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        out.stderr.contains("database not ready after 1s")
            && out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
}

#[test]
fn statement_timeout_stops_a_runaway_migration() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "001_slow.sql",
        "-- migrate:up\ncreate table s (x int);\nselect pg_sleep(30);\n-- migrate:down\ndrop table s;\n",
    );
    let start = std::time::Instant::now();
    let out = run(migrate(&db, dir.path()).args(["up", "--statement-timeout", "300ms"]));
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let msg = out.events("migration")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("statement timeout") && msg.contains("57014"),
        "{msg}"
    );
    assert!(
        c.query(&db.name, "SELECT to_regclass('s')::text")
            .iter()
            .all(|r| r.is_empty()),
        "rolled back"
    );
}
