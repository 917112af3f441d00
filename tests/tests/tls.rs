//! TLS for opskit's own connections, against a TLS server and a plaintext
//! one, with `psql` (libpq) side by side as the reference: every sslmode,
//! with and without a root certificate, connects or fails as psql does and
//! uses TLS when psql does. Then the named failures, and the whole chain
//! (pgbackup, verify-backup, migrate, healthcheck, the nightly procedure)
//! against a `hostssl`-only server with `sslmode=verify-full`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use opskit::pgconn::ConnSpec;
use opskit_testkit::procs::{Procs, example_app, examples_dir};
use opskit_testkit::tls::{expired_tls_cluster, self_signed_tls_cluster, tls_cluster};
use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, bin, cluster};

const SSL_USED: &str =
    "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)";

/// What a connection attempt came to: refused, or connected with or
/// without TLS.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    Refused,
    Plain,
    Tls,
}

/// psql's outcome for `url`, with `home` as its home directory.
fn psql(c: &Cluster, url: &str, home: &Path) -> (Outcome, String) {
    let out = Command::new(c.bindir().join("psql"))
        .args(["-X", "-w", "-A", "-t", "-d", url, "-c", SSL_USED])
        .env("HOME", home)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY")
        .env_remove("PGCHANNELBINDING")
        .output()
        .unwrap();
    let o = match (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim(),
    ) {
        (false, _) => Outcome::Refused,
        (true, "t") => Outcome::Tls,
        (true, _) => Outcome::Plain,
    };
    (o, String::from_utf8_lossy(&out.stderr).trim().to_string())
}

/// opskit's outcome for `url` (its error message when refused).
fn ours(url: &str, home: &Path) -> (Outcome, String) {
    let home = home.display().to_string();
    let env = move |k: &str| (k == "HOME").then(|| home.clone());
    let spec = match ConnSpec::resolve_with(Some(url), &env) {
        Ok(s) => s,
        Err(e) => return (Outcome::Refused, e.msg),
    };
    match spec.connect_with_tls_info() {
        Err(e) => (Outcome::Refused, e.msg),
        Ok((mut client, info)) => {
            let ssl: bool = client.query_one(SSL_USED, &[]).unwrap().get(0);
            assert_eq!(
                ssl,
                info.is_some(),
                "{url}: TLS info disagrees with the server"
            );
            (
                if ssl { Outcome::Tls } else { Outcome::Plain },
                String::new(),
            )
        }
    }
}

fn same_as_psql(c: &Cluster, url: &str, home: &Path) -> (Outcome, String) {
    let (want, psql_err) = psql(c, url, home);
    let (got, msg) = ours(url, home);
    assert_eq!(
        got, want,
        "{url}\n  psql: {want:?} {psql_err}\n  opskit: {got:?} {msg}"
    );
    if got == Outcome::Refused {
        assert!(!msg.contains(c.password()), "password in: {msg}");
    }
    (got, msg)
}

const MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

fn url_on(c: &Cluster, host: &str, db: &str, query: &str) -> String {
    let u = c.url(db).replacen("127.0.0.1", host, 1);
    if query.is_empty() {
        u
    } else {
        format!("{u}?{query}")
    }
}

/// Every sslmode, with no root certificate, the right CA and another CA,
/// at each host name, on databases reachable over TLS only, plaintext
/// only, or either.
#[test]
fn every_sslmode_agrees_with_psql() {
    let tls = tls_cluster();
    let plain = cluster();
    let tls_db = tls.cluster.create_db();
    let plain_db = plain.create_db();
    let home = tempfile::tempdir().unwrap();
    let roots = [
        String::new(),
        format!("&sslrootcert={}", tls.file("ca.crt")),
        format!("&sslrootcert={}", tls.file("other-ca.crt")),
    ];
    let mut cases = Vec::new();
    for host in ["127.0.0.1", "localhost", "127.0.0.2"] {
        for db in [tls_db.name.as_str(), "plain_only"] {
            cases.push((tls.cluster, host, db));
        }
    }
    for host in ["127.0.0.1", "localhost"] {
        cases.push((plain, host, plain_db.name.as_str()));
    }
    let mut seen = std::collections::BTreeMap::new();
    for (c, host, db) in cases {
        for mode in MODES {
            for root in &roots {
                let url = url_on(c, host, db, &format!("sslmode={mode}{root}"));
                let (o, _) = same_as_psql(c, &url, home.path());
                *seen.entry(format!("{o:?}")).or_insert(0) += 1;
            }
        }
    }
    // The matrix reaches every outcome, so agreement is not vacuous.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn named_failures_say_what_failed() {
    let tls = tls_cluster();
    let db = tls.cluster.create_db();
    let home = tempfile::tempdir().unwrap();
    let ca = tls.file("ca.crt");
    let other = tls.file("other-ca.crt");
    let cases = [
        (
            url_on(
                tls.cluster,
                "127.0.0.2",
                &db.name,
                &format!("sslmode=verify-full&sslrootcert={ca}"),
            ),
            vec![
                "not valid for host name '127.0.0.2'",
                "localhost",
                "127.0.0.1",
            ],
        ),
        (
            url_on(
                tls.cluster,
                "localhost",
                &db.name,
                &format!("sslmode=verify-full&sslrootcert={other}"),
            ),
            vec!["unknown CA", other.as_str()],
        ),
        (
            url_on(cluster(), "127.0.0.1", "postgres", "sslmode=require"),
            vec!["does not support TLS", "sslmode=require"],
        ),
        (
            url_on(
                tls.cluster,
                "localhost",
                &db.name,
                "sslmode=verify-ca&sslrootcert=/nonexistent/root.crt",
            ),
            vec![
                "sslmode=verify-ca needs a root certificate",
                "/nonexistent/root.crt",
            ],
        ),
    ];
    for (url, wants) in cases {
        let c = if url.contains(&format!(":{}/", cluster().port())) {
            cluster()
        } else {
            tls.cluster
        };
        let (o, msg) = same_as_psql(c, &url, home.path());
        assert_eq!(o, Outcome::Refused, "{url}");
        assert!(!msg.contains('\n'), "one line: {msg}");
        for w in wants {
            assert!(msg.contains(w), "{url}: want '{w}' in: {msg}");
        }
    }
    // An expired server certificate: refused when verified, named with its date.
    let exp = expired_tls_cluster();
    let edb = exp.cluster.create_db();
    let url = exp.verify_full_url(&edb.name);
    let (o, msg) = same_as_psql(exp.cluster, &url, home.path());
    assert_eq!(o, Outcome::Refused);
    assert!(msg.contains("server certificate expired on"), "{msg}");
    // Unverified, the same server is still reached over TLS, as with psql.
    let url = exp.url_at("localhost", &edb.name, "sslmode=require");
    assert_eq!(same_as_psql(exp.cluster, &url, home.path()).0, Outcome::Tls);
    // healthcheck's default levels page for the database's certificate,
    // as they do for a tls: check.
    let out = run(tool("healthcheck").arg(&url));
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    let check = &out.events("check")[0];
    assert_eq!(check["status"], "CRITICAL", "{check}");
    assert_eq!(check["values"]["tls"], true);
    assert!(
        check["values"]["cert_days_left"].as_f64().unwrap() < 0.0,
        "{check}"
    );
}

/// PostgreSQL's manual makes a self-signed `server.crt` (a CA certificate)
/// and gives it to clients as `root.crt`: libpq trusts it, and so must we.
#[test]
fn a_self_signed_server_certificate_given_as_root() {
    let ss = self_signed_tls_cluster();
    let db = ss.cluster.create_db();
    let home = tempfile::tempdir().unwrap();
    let root = format!("sslrootcert={}", ss.file("ca.crt"));
    for (host, mode, want) in [
        ("localhost", "verify-full", Outcome::Tls),
        ("127.0.0.1", "verify-full", Outcome::Tls),
        ("127.0.0.2", "verify-full", Outcome::Refused),
        ("127.0.0.2", "verify-ca", Outcome::Tls),
        ("localhost", "require", Outcome::Tls),
    ] {
        let url = ss.url_at(host, &db.name, &format!("sslmode={mode}&{root}"));
        assert_eq!(same_as_psql(ss.cluster, &url, home.path()).0, want, "{url}");
    }
}

#[test]
fn client_certificates_and_their_keys() {
    let tls = tls_cluster();
    let db = tls.cluster.create_db();
    let home = tempfile::tempdir().unwrap();
    let base = format!(
        "postgresql://certuser@localhost:{}/{}?sslmode=verify-full&sslrootcert={}",
        tls.cluster.port(),
        db.name,
        tls.file("ca.crt")
    );
    let with = format!(
        "{base}&sslcert={}&sslkey={}",
        tls.file("client.crt"),
        tls.file("client.key")
    );
    assert_eq!(
        same_as_psql(tls.cluster, &with, home.path()).0,
        Outcome::Tls
    );
    assert_eq!(
        same_as_psql(tls.cluster, &base, home.path()).0,
        Outcome::Refused
    );
    // A key readable by others is refused by both, before connecting.
    let loose = home.path().join("loose.key");
    std::fs::copy(tls.file("client.key"), &loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let url = format!(
        "{base}&sslcert={}&sslkey={}",
        tls.file("client.crt"),
        loose.display()
    );
    let (o, msg) = same_as_psql(tls.cluster, &url, home.path());
    assert_eq!(o, Outcome::Refused);
    assert!(
        msg.contains("group or world access") && msg.contains("loose.key"),
        "{msg}"
    );
    // libpq's default files under ~/.postgresql are used when present.
    let pgdir = home.path().join(".postgresql");
    std::fs::create_dir(&pgdir).unwrap();
    std::fs::copy(tls.file("client.crt"), pgdir.join("postgresql.crt")).unwrap();
    std::fs::copy(tls.file("client.key"), pgdir.join("postgresql.key")).unwrap();
    std::fs::copy(tls.file("ca.crt"), pgdir.join("root.crt")).unwrap();
    let bare = format!(
        "postgresql://certuser@localhost:{}/{}?sslmode=verify-full",
        tls.cluster.port(),
        db.name
    );
    assert_eq!(
        same_as_psql(tls.cluster, &bare, home.path()).0,
        Outcome::Tls
    );
    // With a root.crt present, require verifies the chain (as verify-ca).
    std::fs::copy(tls.file("other-ca.crt"), pgdir.join("root.crt")).unwrap();
    let url = tls.url_at("127.0.0.2", &db.name, "sslmode=require");
    assert_eq!(
        same_as_psql(tls.cluster, &url, home.path()).0,
        Outcome::Refused
    );
}

#[test]
fn channel_binding() {
    let tls = tls_cluster();
    let db = tls.cluster.create_db();
    let home = tempfile::tempdir().unwrap();
    let scram = tls.url_at(
        "localhost",
        &db.name,
        "sslmode=require&channel_binding=require",
    );
    assert_eq!(
        same_as_psql(tls.cluster, &scram, home.path()).0,
        Outcome::Tls
    );
    // No password exchange, no channel binding: refused by both.
    let trust = format!(
        "postgresql://trustuser@localhost:{}/{}?sslmode=require&channel_binding=require",
        tls.cluster.port(),
        db.name
    );
    let (o, msg) = same_as_psql(tls.cluster, &trust, home.path());
    assert_eq!(o, Outcome::Refused);
    assert!(msg.contains("channel_binding=require"), "{msg}");
    // In plaintext there is nothing to bind to.
    let plain = tls.url_at(
        "127.0.0.1",
        "plain_only",
        "sslmode=disable&channel_binding=require",
    );
    assert_eq!(
        same_as_psql(tls.cluster, &plain, home.path()).0,
        Outcome::Refused
    );
    let plain = tls.url_at(
        "127.0.0.1",
        "plain_only",
        "sslmode=disable&channel_binding=disable",
    );
    assert_eq!(
        same_as_psql(tls.cluster, &plain, home.path()).0,
        Outcome::Plain
    );
}

fn tool(name: &str) -> Command {
    let mut c = opskit_testkit::signing::command(bin(name));
    c.env_remove("DATABASE_URL").env_remove("OPSKIT_LOG");
    c
}

/// The whole chain against a hostssl-only server with verify-full.
#[test]
fn the_chain_over_verify_full() {
    let tls = tls_cluster();
    let c = tls.cluster;
    let db = c.create_db();
    let url = tls.verify_full_url(&db.name);
    let dir = tempfile::tempdir().unwrap();
    let migrations = examples_dir().join("migrations");
    let out = run(tool("migrate")
        .args(["--db", &url, "--dir"])
        .arg(&migrations)
        .arg("up"));
    assert_eq!(out.code, 0, "migrate: {}", out.stderr);
    assert!(!out.events("migration").is_empty());

    let root = dir.path().join("backups");
    let out = run(tool("pgbackup")
        .args(["--db", &url, "--row-counts", "--pg-bindir"])
        .arg(c.bindir())
        .arg("--dest")
        .arg(&root));
    assert_eq!(out.code, 0, "pgbackup: {}", out.stderr);
    let set = out.events("backup")[0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest = std::fs::read_to_string(Path::new(&set).join("MANIFEST.json")).unwrap();
    assert!(
        manifest.contains("schema_migrations"),
        "row counts were taken"
    );

    let scratch = tls.verify_full_url("postgres");
    let out = run(tool("verify-backup")
        .args(["--restore-into", &scratch, "--pg-bindir"])
        .arg(c.bindir())
        .arg(&set));
    assert_eq!(out.code, 0, "verify-backup: {}\n{}", out.stdout, out.stderr);

    let out = run(tool("healthcheck").args([url.as_str(), "-q"]));
    assert_eq!(out.code, 0, "healthcheck: {}\n{}", out.stdout, out.stderr);
    let check = &out.events("check")[0];
    assert_eq!(check["values"]["tls"], true, "{check}");
    // The alert rules' certificate metric covers the database's too.
    let prom = dir.path().join("opskit.prom");
    let out = run(tool("healthcheck")
        .args([url.as_str(), "-q", "--prometheus"])
        .arg(&prom));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(
        text.lines().any(
            |l| l.starts_with("opskit_cert_expiry_seconds{") && l.contains("kind=\"postgres\"")
        ),
        "{text}"
    );
    assert!(
        check["values"]["tls_version"]
            .as_str()
            .unwrap()
            .starts_with("TLSv1.")
    );
    assert!(check["values"]["cert_days_left"].as_f64().unwrap() > 300.0);

    // The nightly procedure, configured by URL alone.
    let app = example_app(c);
    let mut p = Procs::new(c, &app.name);
    p.set("DATABASE_URL", &tls.verify_full_url(&app.name));
    let out = run(&mut p.script("backup-system.sh"));
    assert_eq!(
        out.code, 0,
        "backup-system.sh: {}\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(p.sets().len(), 1);
}

/// `sslrootcert=system` trusts the system's CA bundle (here the test CA,
/// as `SSL_CERT_FILE` names it) with verify-full, for opskit's own
/// connection and for pg_dump, whose libpq 15 does not know `system`: it
/// is handed the bundle's path.
#[test]
fn sslrootcert_system_uses_the_system_bundle() {
    let tls = tls_cluster();
    let db = tls.cluster.create_db();
    let url = tls.url_at("localhost", &db.name, "sslrootcert=system");
    let dir = tempfile::tempdir().unwrap();
    let out = run(tool("pgbackup")
        .args(["--db", &url, "--row-counts", "--pg-bindir"])
        .arg(tls.cluster.bindir())
        .arg("--dest")
        .arg(dir.path())
        .env("SSL_CERT_FILE", tls.file("ca.crt")));
    assert_eq!(out.code, 0, "pgbackup: {}", out.stderr);
    let out = run(tool("healthcheck")
        .arg(&url)
        .env("SSL_CERT_FILE", tls.file("ca.crt")));
    assert_eq!(out.code, 0, "{}", out.stdout);
    assert_eq!(out.events("check")[0]["values"]["tls"], true);
    // Another bundle does not hold the test CA: refused, naming the bundle.
    let out = run(tool("healthcheck")
        .arg(&url)
        .env("SSL_CERT_FILE", tls.file("other-ca.crt")));
    assert_eq!(out.code, 2, "{}", out.stdout);
    let detail = out.events("check")[0]["detail"].to_string();
    assert!(
        detail.contains("unknown CA") && detail.contains("sslrootcert=system"),
        "{detail}"
    );
}
