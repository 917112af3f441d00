//! Attacks on the shell procedures themselves (`scripts/`), without a
//! database: the tools they call are stubs that record what they were
//! given. What is attacked:
//!
//! - secrets in the database URL: a `password` query parameter and a
//!   keyword/value string must never reach a command line;
//! - directories others own or can write (the state and metrics
//!   directories): a planted symlink is refused, never followed, and no
//!   temp file is reopened or chmod'ed by name;
//!
//! attacks_restore.rs attacks the restore procedures the same way.
//! `OPSKIT_TEST_SCRIPTS=DIR` runs these against another copy of `scripts/`
//! (an older checkout's, to see each attack succeed there).

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;

use opskit_testkit::tools::Output;

use opskit_testkit::sh::{
    PATH, entries, env_file, is_root, mode, procedure, refused, set_mode, source, stub, write_mode,
};
// 1. Secrets in the database URL.

/// (URL, URL left, PGPASSWORD) for `password_to_env`.
const URLS: &[(&str, &str, Option<&str>)] = &[
    ("postgresql://u:pw@h/db", "postgresql://u@h/db", Some("pw")),
    (
        "postgresql://u@h/db?password=S3cr%23t%26x%3D",
        "postgresql://u@h/db",
        Some("S3cr#t&x="),
    ),
    (
        "postgresql://u@h:5433/db?sslmode=require&password=Qp%20w&application_name=app",
        "postgresql://u@h:5433/db?sslmode=require&application_name=app",
        Some("Qp w"),
    ),
    // libpq takes the query's password over the userinfo's.
    (
        "postgres://u:first@h/db?password=second",
        "postgres://u@h/db",
        Some("second"),
    ),
    (
        "postgresql://u@/db?host=/run/postgresql&password=sock",
        "postgresql://u@/db?host=/run/postgresql",
        Some("sock"),
    ),
    // libpq %-decodes parameter names too.
    (
        "postgresql://h/db?pass%77ord=enc",
        "postgresql://h/db",
        Some("enc"),
    ),
    (
        "postgresql://u:Cn#ry?2468;a&b$cQ@127.0.0.1:5432/db",
        "postgresql://u@127.0.0.1:5432/db",
        Some("Cn#ry?2468;a&b$cQ"),
    ),
    (
        "postgresql://u@h/db?sslmode=require",
        "postgresql://u@h/db?sslmode=require",
        None,
    ),
    ("app", "app", None),
    // An application's DATABASE_URL names its driver: libpq knows none.
    (
        "postgresql+psycopg2://u:Drv%40pw@h/db",
        "postgresql://u@h/db",
        Some("Drv@pw"),
    ),
    (
        "postgres+asyncpg://u@h/db?password=Asy",
        "postgres://u@h/db",
        Some("Asy"),
    ),
];

#[test]
fn a_password_in_the_url_query_is_moved_to_pgpassword() {
    let d = tempfile::tempdir().unwrap();
    let mut wrong = vec![];
    for (url, want_url, want_pw) in URLS {
        let out = source(
            d.path(),
            &[("DATABASE_URL", url)],
            r#"unset PGPASSWORD
password_to_env DATABASE_URL
printf '%s\0%s\0%s\0' "$DATABASE_URL" "${PGPASSWORD-<unset>}" "$(url_with_db "$DATABASE_URL" postgres)""#,
        );
        assert_eq!(out.code, 0, "{url}: {}", out.stderr);
        let got: Vec<&str> = out.stdout.split_terminator('\0').collect();
        let pw = want_pw.unwrap_or("<unset>");
        if got.len() != 3 || got[0] != *want_url || got[1] != pw {
            wrong.push(format!(
                "{url}: want {want_url} + PGPASSWORD {pw}, got {got:?}"
            ));
        }
        // What psql -d and verify-backup --restore-into are given.
        if let (Some(pw), Some(arg)) = (want_pw, got.get(2))
            && (arg.contains("password") || (pw.len() > 2 && arg.contains(pw)))
        {
            wrong.push(format!("{url}: the password is in the argument {arg}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_keyword_value_database_url_is_refused_in_one_line() {
    let d = tempfile::tempdir().unwrap();
    for conninfo in [
        "host=db.internal port=5432 dbname=app user=app password=Kv%Secret",
        "dbname=app password='Kv Secret'",
    ] {
        let out = source(
            d.path(),
            &[("DATABASE_URL", conninfo)],
            "password_to_env DATABASE_URL\necho still running",
        );
        refused(&out, conninfo);
        assert!(
            out.stderr.contains("DATABASE_URL") && out.stderr.contains("URL"),
            "{}",
            out.stderr
        );
        assert!(!out.stderr.contains("Secret"), "{}", out.stderr);
        assert!(!out.stdout.contains("still running"));
    }
    // The restore test's own server is named as its setting.
    let out = source(
        d.path(),
        &[("OPSKIT_RESTORE_TEST_URL", "host=h password=Kv%Secret")],
        "server=$OPSKIT_RESTORE_TEST_URL\npassword_to_env server OPSKIT_RESTORE_TEST_URL",
    );
    refused(&out, "OPSKIT_RESTORE_TEST_URL");
    assert!(
        out.stderr.contains("OPSKIT_RESTORE_TEST_URL"),
        "{}",
        out.stderr
    );
    // A URL of another scheme with a password: refused, not passed on.
    let out = source(
        d.path(),
        &[("DATABASE_URL", "mysql://u:My%Secret@h/db")],
        "password_to_env DATABASE_URL\necho still running",
    );
    refused(&out, "not a PostgreSQL URL");
    assert!(!out.stderr.contains("Secret"), "{}", out.stderr);
    assert!(!out.stdout.contains("still running"));
}

/// A command a procedure runs as another user (restore-pitr.sh as
/// postgres, restore-system.sh's pull as the root's owner) is in a
/// session of its own, away from root's terminal: `runuser -u` kept root's
/// session, whose terminal that user's processes could push keystrokes
/// into (TIOCSTI). Its exit status comes back.
#[test]
fn a_command_run_as_another_user_gets_a_session_of_its_own() {
    if !is_root() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let out = source(
        d.path(),
        &[],
        "cut -d' ' -f6 /proc/$$/stat\nas_user nobody bash -c 'cut -d\" \" -f6 /proc/$$/stat; exit 3' </dev/null || echo \"exit $?\"",
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}\n{}", out.stdout, out.stderr);
    assert_ne!(lines[0], lines[1], "the same session: {}", out.stdout);
    assert_eq!(lines[2], "exit 3");
}

/// An '@' after the host leaves no way to tell the password from the host:
/// refused rather than put on a command line.
#[test]
fn a_url_whose_query_password_cannot_be_taken_apart_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = source(
        d.path(),
        &[("DATABASE_URL", "postgresql://u@h?password=Am@Secret")],
        "password_to_env DATABASE_URL\necho \"$DATABASE_URL\"",
    );
    refused(&out, "an '@' in the query");
    assert!(!out.stderr.contains("Secret"), "{}", out.stderr);
}

// 2. State and metrics directories.

/// A state directory, stub tools and an env file for rollback-migration.sh,
/// the cheapest procedure that makes a run directory.
struct StateDirs {
    dir: tempfile::TempDir,
}

impl StateDirs {
    fn new() -> StateDirs {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        // migrate status: nothing applied, so nothing to roll back.
        stub(&p.join("bin"), "migrate", "exit 0");
        fs::create_dir(p.join("state")).unwrap();
        set_mode(&p.join("state"), 0o755);
        env_file(
            &p.join("opskit.env"),
            &[
                ("DATABASE_URL", "postgresql://u@127.0.0.1:1/app".into()),
                ("OPSKIT_STATE_DIR", p.join("state").display().to_string()),
            ],
        );
        StateDirs { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn rollback(&self) -> Output {
        procedure(
            self.dir.path(),
            &self.path("opskit.env"),
            &self.path("bin"),
            "rollback-migration.sh",
            &["--to", "none"],
        )
    }
}

#[test]
fn a_symlink_planted_as_the_runs_directory_is_refused_and_never_followed() {
    let s = StateDirs::new();
    // A directory only root may enter, and a link to it where runs/ goes.
    let target = s.path("root-only");
    fs::create_dir(&target).unwrap();
    set_mode(&target, 0o711);
    symlink(&target, s.path("state/runs")).unwrap();
    let out = s.rollback();
    assert_eq!(
        mode(&target),
        0o711,
        "the link's target was chmod'ed; stderr:\n{}",
        out.stderr
    );
    assert!(
        entries(&target).is_empty(),
        "a run directory was made through the link: {:?}",
        entries(&target)
    );
    refused(&out, "runs/ a symlink");
    assert!(out.stderr.contains("symlink"), "{}", out.stderr);

    // The state directory itself a symlink: refused too.
    fs::remove_file(s.path("state/runs")).unwrap();
    fs::rename(s.path("state"), s.path("real-state")).unwrap();
    symlink(s.path("real-state"), s.path("state")).unwrap();
    let out = s.rollback();
    refused(&out, "the state directory a symlink");
    assert!(entries(&s.path("real-state")).is_empty());
}

#[test]
fn a_state_directory_others_can_write_or_own_is_refused() {
    let s = StateDirs::new();
    set_mode(&s.path("state"), 0o775);
    let out = s.rollback();
    refused(&out, "a group-writable state directory");
    assert!(out.stderr.contains("writable"), "{}", out.stderr);
    assert!(entries(&s.path("state")).is_empty());

    set_mode(&s.path("state"), 0o755);
    fs::create_dir(s.path("state/runs")).unwrap();
    set_mode(&s.path("state/runs"), 0o777);
    let out = s.rollback();
    refused(&out, "a world-writable runs/");
    assert!(entries(&s.path("state/runs")).is_empty());
    fs::remove_dir(s.path("state/runs")).unwrap();

    if is_root() {
        // Owned by another user, while root runs the procedure.
        std::os::unix::fs::chown(s.path("state"), Some(65534), Some(65534)).unwrap();
        let out = s.rollback();
        refused(&out, "a state directory of another user");
        assert!(out.stderr.contains("uid 65534"), "{}", out.stderr);
        assert!(entries(&s.path("state")).is_empty());
    } else {
        eprintln!("not root: the other owner's state directory is not tried");
    }

    // As it should be: a run directory of mode 0700.
    std::os::unix::fs::chown(s.path("state"), Some(0), Some(0)).ok();
    let out = s.rollback();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let runs = entries(&s.path("state/runs"));
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(mode(&s.path("state/runs")), 0o700);
}

/// restore-test.sh with a stub verify-backup that records its run.
struct Metrics {
    dir: tempfile::TempDir,
}

impl Metrics {
    fn new() -> Metrics {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        stub(
            &p.join("bin"),
            "verify-backup",
            &format!(
                "echo ran >>{}\necho '{{\"event\":\"verify\",\"ok\":true,\"set\":\"app-20260101T000000Z\",\"restore_s\":1.5}}'",
                p.join("verify-ran").display()
            ),
        );
        fs::create_dir(p.join("backups")).unwrap();
        env_file(
            &p.join("opskit.env"),
            &[
                ("DATABASE_URL", "postgresql://u@127.0.0.1:1/app".into()),
                (
                    "OPSKIT_BACKUP_ROOT",
                    p.join("backups").display().to_string(),
                ),
                ("OPSKIT_STATE_DIR", p.join("state").display().to_string()),
                (
                    "OPSKIT_METRICS_DIR",
                    p.join("metrics").display().to_string(),
                ),
            ],
        );
        Metrics { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn restore_test(&self) -> Output {
        procedure(
            self.dir.path(),
            &self.path("opskit.env"),
            &self.path("bin"),
            "restore-test.sh",
            &[],
        )
    }
}

/// The restore test's own server (OPSKIT_RESTORE_TEST_URL) is not offered
/// production's password: it logs in with its own, or ~/.pgpass. (It was
/// given production's PGPASSWORD every week.)
#[test]
fn the_restore_test_server_is_not_given_productions_password() {
    let m = Metrics::new();
    let seen = m.path("seen");
    stub(
        &m.path("bin"),
        "verify-backup",
        &format!(
            "printf '%s\\n' \"${{PGPASSWORD-<unset>}}\" \"$@\" >{}\necho '{{\"event\":\"verify\",\"ok\":true,\"set\":\"app-20260101T000000Z\",\"restore_s\":1.5}}'",
            seen.display()
        ),
    );
    fs::create_dir(m.path("metrics")).unwrap();
    for (test_url, want) in [
        ("postgresql://t@127.0.0.1:2/scratch", "<unset>"),
        ("postgresql://t:TestPw@127.0.0.1:2/scratch", "TestPw"),
    ] {
        env_file(
            &m.path("opskit.env"),
            &[
                (
                    "DATABASE_URL",
                    "postgresql://u:ProdSecret@127.0.0.1:1/app".into(),
                ),
                ("OPSKIT_RESTORE_TEST_URL", test_url.to_string()),
                (
                    "OPSKIT_BACKUP_ROOT",
                    m.path("backups").display().to_string(),
                ),
                ("OPSKIT_STATE_DIR", m.path("state").display().to_string()),
                (
                    "OPSKIT_METRICS_DIR",
                    m.path("metrics").display().to_string(),
                ),
            ],
        );
        let out = m.restore_test();
        assert_eq!(out.code, 0, "{}", out.stderr);
        let got = fs::read_to_string(&seen).unwrap();
        assert_eq!(got.lines().next(), Some(want), "{test_url}: {got}");
        assert!(
            !got.contains("ProdSecret") && !got.contains("TestPw@"),
            "{got}"
        );
        assert!(got.contains("postgresql://t@127.0.0.1:2/scratch"), "{got}");
    }
}

#[test]
fn a_symlinked_or_foreign_metrics_directory_is_refused_before_the_run() {
    let m = Metrics::new();
    let target = m.path("elsewhere");
    fs::create_dir(&target).unwrap();
    set_mode(&target, 0o700);
    symlink(&target, m.path("metrics")).unwrap();
    let out = m.restore_test();
    assert!(
        entries(&target).is_empty(),
        "written through the link: {:?}; stderr:\n{}",
        entries(&target),
        out.stderr
    );
    refused(&out, "a symlinked metrics directory");
    assert!(out.stderr.contains("OPSKIT_METRICS_DIR"), "{}", out.stderr);
    assert_eq!(mode(&target), 0o700);
    assert!(!m.path("verify-ran").exists(), "the restore test ran first");

    fs::remove_file(m.path("metrics")).unwrap();
    fs::create_dir(m.path("metrics")).unwrap();
    set_mode(&m.path("metrics"), 0o777);
    let out = m.restore_test();
    refused(&out, "a world-writable metrics directory");
    assert!(entries(&m.path("metrics")).is_empty());

    if is_root() {
        // node_exporter's directory, owned by its user: written as
        // everywhere, through a new file renamed into place.
        set_mode(&m.path("metrics"), 0o755);
        std::os::unix::fs::chown(m.path("metrics"), Some(65534), Some(65534)).unwrap();
        let out = m.restore_test();
        assert_eq!(out.code, 0, "{}", out.stderr);
        fs::remove_file(m.path("metrics/opskit_restore_test.prom")).unwrap();
        std::os::unix::fs::chown(m.path("metrics"), Some(0), Some(0)).unwrap();
    }

    // Group-writable (a textfile directory several service users share):
    // written, and a symlink at the file's name is replaced, not followed.
    set_mode(&m.path("metrics"), 0o775);
    symlink(&target, m.path("metrics/opskit_restore_test.prom")).unwrap();
    let out = m.restore_test();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let prom = m.path("metrics/opskit_restore_test.prom");
    assert!(
        fs::symlink_metadata(&prom).unwrap().is_file(),
        "the symlink at the .prom name is still there"
    );
    assert_eq!(mode(&prom), 0o644);
    assert!(
        fs::read_to_string(&prom)
            .unwrap()
            .contains("opskit_restore_test_success 1")
    );
    assert!(entries(&target).is_empty(), "{:?}", entries(&target));
    assert_eq!(entries(&m.path("metrics")), ["opskit_restore_test.prom"]);
}

/// Whoever can write the directory swaps the temp file for a symlink to a
/// file of root's between its creation and its chmod (the stub `chmod`
/// does it, then runs the real one): the mode is set through the
/// descriptor written, never through the name.
#[test]
fn a_temp_file_swapped_for_a_symlink_is_never_chmoded_through_it() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let victim = p.join("shadow");
    write_mode(&victim, "root:secret\n", 0o640);
    fs::create_dir(p.join("metrics")).unwrap();
    fs::create_dir(p.join("state")).unwrap();
    set_mode(&p.join("state"), 0o700);
    stub(
        &p.join("shim"),
        "chmod",
        &format!(
            "for f in {dir}/metrics/.*.prom.* {dir}/state/.last-deploy.env.*; do\n  [[ -e $f || -L $f ]] && {{ rm -f \"$f\"; ln -s {victim} \"$f\"; }}\ndone\nexec /bin/chmod \"$@\"",
            dir = p.display(),
            victim = victim.display()
        ),
    );
    let path = format!("{}:{PATH}", p.join("shim").display());
    let out = source(
        p,
        &[("PATH", &path)],
        &format!(
            "echo 'm 1' | write_metrics {}/metrics/x.prom\nwrite_env_file {}/state/last-deploy.env A b",
            p.display(),
            p.display()
        ),
    );
    assert_eq!(
        mode(&victim),
        0o640,
        "chmod went through the swapped name; stderr:\n{}",
        out.stderr
    );
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root:secret\n");
}

/// A symlink to a directory at the file's name: `mv` without -T would move
/// the new file into that directory.
#[test]
fn a_symlinked_directory_at_the_files_name_is_replaced_not_entered() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let elsewhere = p.join("elsewhere");
    fs::create_dir(&elsewhere).unwrap();
    fs::create_dir(p.join("metrics")).unwrap();
    symlink(&elsewhere, p.join("metrics/x.prom")).unwrap();
    let out = source(
        p,
        &[],
        &format!("echo 'm 1' | write_metrics {}/metrics/x.prom", p.display()),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(entries(&elsewhere).is_empty(), "{:?}", entries(&elsewhere));
    assert_eq!(
        fs::read_to_string(p.join("metrics/x.prom")).unwrap(),
        "m 1\n"
    );
}
