//! postgres: and migrations: checks against a real PostgreSQL that is
//! healthy, busy, full, stopped and restarting.

mod support;

use std::time::{Duration, Instant};

use opskit_testkit::cluster;
use opskit_testkit::tools::run;
use support::healthcheck;

#[test]
fn vital_signs_of_a_primary() {
    let c = cluster();
    let db = c.create_db();
    // An open transaction ages while the check runs.
    let mut idle = c.client(&db.name);
    idle.batch_execute("BEGIN; SELECT txid_current();").unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let out = run(healthcheck().args([
        &db.url,
        "--expect",
        "role == primary",
        "--expect",
        "version_num >= 150000",
        "--warn",
        "oldest_xact_s > 1s",
        "--crit",
        "connections_pct > 95",
        "--crit",
        "replication_lag_s > 30s",
    ]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let ch = &out.events("check")[0];
    let v = &ch["values"];
    assert_eq!(v["role"], "primary");
    assert_eq!(v["replicas"], 0);
    assert!(v["replication_lag_s"].is_null(), "no replicas, no lag: {v}");
    assert!(v["oldest_xact_s"].as_f64().unwrap() >= 1.0, "{v}");
    assert!(v["connections"].as_i64().unwrap() >= 2);
    assert!(v["db_size_bytes"].as_i64().unwrap() > 1_000_000);
    assert!(
        ch["detail"]
            .as_str()
            .unwrap()
            .starts_with("oldest_xact_s is"),
        "{ch}"
    );
    assert!(!out.stdout.contains(c.password()), "password in output");
    idle.batch_execute("COMMIT").unwrap();
}

#[test]
fn database_url_from_the_environment() {
    let c = cluster();
    let db = c.create_db();
    let out = run(healthcheck().arg("postgres:").env("DATABASE_URL", &db.url));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
}

#[test]
fn stopped_then_restarting_server() {
    let c = cluster();
    let db = c.create_db_alone();
    c.stop();
    let t = Instant::now();
    let out = run(healthcheck().args([&db.url, "--timeout", "2s"]));
    assert_eq!(out.code, 2);
    let d = out.events("check")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains("cannot connect") && d.contains("refused"), "{d}");
    assert!(t.elapsed() < Duration::from_secs(3));
    // The gate a post-restart script waits on: polls until the server is back.
    let url = db.url.clone();
    let waiter = std::thread::spawn(move || {
        run(healthcheck().args(["--wait", "60s", "--interval", "200ms", &url]))
    });
    std::thread::sleep(Duration::from_millis(1500));
    c.start();
    let out = waiter.join().unwrap();
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.summary()["rounds"].as_u64().unwrap() > 1);
}

#[test]
fn server_at_max_connections() {
    let c = cluster();
    let db = c.create_db_alone();
    let mut held = vec![];
    let refused = loop {
        let mut cfg = postgres::Config::new();
        cfg.host_path(c.socket_dir())
            .port(c.port())
            .user("opskit")
            .dbname(&db.name);
        match cfg.connect(postgres::NoTls) {
            Ok(cl) => held.push(cl),
            Err(e) => {
                break e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or(e.to_string());
            }
        }
        assert!(held.len() < 500, "no connection limit reached");
    };
    assert!(refused.contains("too many clients"), "{refused}");
    let out = run(healthcheck().args([&db.url, "--timeout", "5s"]));
    assert_eq!(out.code, 2);
    let d = out.events("check")[0]["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(d.contains("too many clients"), "{d}");
    // With a few slots free, the usage shows and a threshold warns.
    held.truncate(held.len() - 5);
    let out = run(healthcheck().args([&db.url, "--warn", "connections_pct > 80"]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    let pct = out.events("check")[0]["values"]["connections_pct"]
        .as_f64()
        .unwrap();
    assert!(pct > 80.0, "{pct}");
}

#[test]
fn pending_migrations() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    for (f, sql) in [
        ("001_a.sql", "create table a(x int);"),
        ("002_b.sql", "create table b(x int);"),
    ] {
        std::fs::write(
            dir.path().join(f),
            format!("-- migrate:up\n{sql}\n-- migrate:down\n"),
        )
        .unwrap();
    }
    let target = format!("migrations:{}", dir.path().display());
    // A database migrate (or dbmate) has never touched: both pending.
    let out = run(healthcheck().args([&target, "--db", &db.url]));
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert_eq!(out.events("check")[0]["values"]["pending"], 2);
    let mut cl = c.client(&db.name);
    cl.batch_execute("CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY); INSERT INTO schema_migrations VALUES ('001'), ('002');")
        .unwrap();
    let out = run(healthcheck().args([&target, "--db", &db.url, "--expect", "pending == 0"]));
    assert_eq!(out.code, 0, "{}", out.stdout);
    // No database anywhere: a bad definition.
    let out = run(healthcheck().arg(&target));
    assert_eq!(out.code, 3);
    assert!(out.stderr.contains("needs a database"), "{}", out.stderr);
}

/// `?` and `#` in a password, unencoded, as libpq and psql take them: the
/// check connects, and the password shows nowhere.
#[test]
fn password_with_hash_and_question_mark() {
    let c = cluster();
    let db = c.create_db();
    let role = format!("app2_{}", std::process::id());
    let pw = "Pw#Cnry7Q?Zx9K";
    c.client(&db.name)
        .batch_execute(&format!("CREATE ROLE {role} LOGIN PASSWORD '{pw}'"))
        .unwrap();
    let url = format!(
        "postgresql://{role}:{pw}@127.0.0.1:{}/{}",
        c.port(),
        db.name
    );
    // psql (libpq) takes this URL as it is.
    let psql = std::process::Command::new(c.bindir().join("psql"))
        .args([&url, "-Atc", "SELECT current_user"])
        .env_remove("PGPASSWORD")
        .output()
        .unwrap();
    assert!(
        psql.status.success(),
        "{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let prom = dir.path().join("opskit.prom");
    let out = run(healthcheck().arg(&url).arg("--prometheus").arg(&prom));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let text = std::fs::read_to_string(&prom).unwrap();
    for canary in ["Cnry7Q", "Zx9K"] {
        assert!(!out.stdout.contains(canary), "{}", out.stdout);
        assert!(!out.stderr.contains(canary), "{}", out.stderr);
        assert!(!text.contains(canary), "{text}");
    }
    c.client(&db.name)
        .batch_execute(&format!("DROP ROLE {role}"))
        .unwrap();
}
