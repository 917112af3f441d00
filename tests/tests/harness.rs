//! The harness itself: a real cluster that survives a restart and goes away.

use opskit_testkit::cluster;

#[test]
fn data_survives_a_restart() {
    let c = cluster();
    let db = c.create_db_alone();
    c.query(
        &db.name,
        "CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'kept')",
    );
    c.restart();
    assert_eq!(c.query(&db.name, "SELECT id, v FROM t"), vec!["1|kept"]);
    // A stopped server refuses connections, and comes back on start.
    c.stop();
    let mut cfg = postgres::Config::new();
    cfg.host_path(c.socket_dir())
        .port(c.port())
        .user("opskit")
        .dbname(&db.name);
    assert!(cfg.connect(postgres::NoTls).is_err());
    c.start();
    assert_eq!(c.query(&db.name, "SELECT count(*) FROM t"), vec!["1"]);
}

#[test]
fn tcp_needs_the_password() {
    let c = cluster();
    let db = c.create_db();
    let out = c.run_bin("psql", &db.name, &["-XAtc", "select current_database()"]);
    assert_eq!(out.trim(), db.name);
    let bad = std::process::Command::new(c.bindir().join("psql"))
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", c.port().to_string())
        .env("PGUSER", "opskit")
        .env("PGPASSWORD", "wrong")
        .env("PGDATABASE", &db.name)
        .args(["-XAtc", "select 1"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));
}

#[test]
fn each_test_gets_its_own_database() {
    let c = cluster();
    let a = c.create_db();
    let b = c.create_db();
    assert_ne!(a.name, b.name);
    c.query(&a.name, "CREATE TABLE only_in_a ()");
    assert_eq!(
        c.query(
            &b.name,
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'"
        ),
        vec!["0"]
    );
}
