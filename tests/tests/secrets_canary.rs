//! The README's promise, checked end to end: secrets never appear in a
//! record, a log line, a child process's argv, a `.prom` file or a set
//! file. Canary secrets are put in every place a secret can be (the
//! database password with `#`, `?`, `;`, `&` and `$`; the S3 secret; the
//! age identity; the webhook token), then the nightly job, the restore test,
//! a restore and a production migration run under `strace -f`, which logs
//! every program started and its whole argv. Nothing may hold a canary but
//! the env file and the key files themselves.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::age::Key;
use opskit_testkit::cluster;
use opskit_testkit::procs::{Procs, example_app, examples_dir};
use opskit_testkit::s3::{SECRET, s3};
use opskit_testkit::tools::{Output, run};

const PASSWORD: &str = "Cn#ry?2468;a&b$cQ";
const TOKEN: &str = "T0kenCanary77xq";

/// Run a procedure under strace; its argv log goes to `log`.
fn traced(p: &Procs, log: &Path, script: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("strace");
    cmd.args(["-f", "-qq", "-e", "trace=execve", "-s", "100000", "-o"])
        .arg(log)
        .arg(opskit_testkit::sh::scripts().join(script))
        .args(args);
    p.configure(&mut cmd);
    run(&mut cmd)
}

/// Every regular file under `dir` (not following links).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn secrets_appear_in_no_argv_record_log_metric_or_set_file() {
    let c = cluster();
    let db = example_app(c);
    c.query(
        "postgres",
        &format!(
            "CREATE ROLE canary LOGIN SUPERUSER PASSWORD '{}'",
            PASSWORD.replace('\'', "''")
        ),
    );
    let mut p = Procs::new(c, &db.name);
    // Written raw, as an operator would (libpq and psql accept it).
    p.set(
        "DATABASE_URL",
        &format!(
            "postgresql://canary:{PASSWORD}@127.0.0.1:{}/{}",
            c.port(),
            db.name
        ),
    );
    let key = Key::new(p.dir.path(), "oncall.key");
    p.set("OPSKIT_AGE_RECIPIENTS", &key.public);
    p.set("OPSKIT_AGE_IDENTITY", key.identity.to_str().unwrap());
    let server = s3();
    p.set(
        "OPSKIT_OFFSITE_URL",
        &format!("s3://{}/app", server.bucket("canary")),
    );
    for (k, v) in server.env() {
        p.set(k, &v);
    }
    p.set(
        "OPSKIT_NOTIFY_URL",
        &format!("http://127.0.0.1:9/hooks/{TOKEN}"),
    );
    let migrations = p.path("migrations");
    fs::create_dir(&migrations).unwrap();
    for e in fs::read_dir(examples_dir().join("migrations"))
        .unwrap()
        .flatten()
    {
        fs::copy(e.path(), migrations.join(e.file_name())).unwrap();
    }
    fs::write(
        migrations.join("20261201090000_canary.sql"),
        "-- migrate:up\nCREATE TABLE canary_t (x int);\n-- migrate:down\nDROP TABLE canary_t;\n",
    )
    .unwrap();
    p.set("OPSKIT_MIGRATIONS_DIR", migrations.to_str().unwrap());
    let checks = p.path("checks.ndjson");
    fs::write(&checks, "{\"name\": \"db\", \"target\": \"postgres:\"}\n").unwrap();
    p.set("OPSKIT_CHECKS", checks.to_str().unwrap());

    let logs = p.path("strace");
    fs::create_dir(&logs).unwrap();
    let mut outputs = Vec::new();
    for (i, (script, args, want)) in [
        ("backup-system.sh", &[][..], 0),
        ("restore-test.sh", &[], 0),
        ("restore-system.sh", &["--yes"], 0),
        ("migrate-production.sh", &[], 0),
        ("health-report.sh", &[], 0),
        // Nobody listens on the webhook port: the failure is reported, redacted.
        ("notify-failure.sh", &["opskit-backup.service"], 2),
    ]
    .into_iter()
    .enumerate()
    {
        let out = traced(&p, &logs.join(format!("{i}.log")), script, args);
        assert_eq!(out.code, want, "{script}: {}", out.stderr);
        outputs.push((script, out));
    }

    let canaries = [
        ("database password", PASSWORD.to_string()),
        ("database password's tail", PASSWORD[3..].to_string()),
        ("S3 secret", SECRET.to_string()),
        ("age identity", key.secret()),
        ("webhook token", TOKEN.to_string()),
    ];
    let mut found = Vec::new();
    for (script, out) in &outputs {
        for (what, canary) in &canaries {
            if out.stdout.contains(canary.as_str()) || out.stderr.contains(canary.as_str()) {
                found.push(format!("{what} in the output of {script}"));
            }
        }
    }
    let mut all = Vec::new();
    files(p.dir.path(), &mut all);
    let secret_files = [p.env_file(), key.identity.clone()];
    let mut argv_lines = 0;
    for f in all.iter().filter(|f| !secret_files.contains(f)) {
        let bytes = fs::read(f).unwrap();
        if f.starts_with(&logs) {
            argv_lines += bytes
                .split(|&b| b == b'\n')
                .filter(|l| contains(l, "execve("))
                .count();
        }
        for (what, canary) in &canaries {
            if contains(&bytes, canary) {
                found.push(format!("{what} in {}", f.display()));
            }
        }
    }
    assert!(argv_lines > 50, "strace logged only {argv_lines} programs");
    assert!(found.is_empty(), "secrets leaked: {found:#?}");
}
