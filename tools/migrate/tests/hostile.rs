//! migrate with broken or hostile input: a FIFO or a directory where a
//! migration file is expected, a migration that fails (one line on stderr,
//! nothing from migrate's own bookkeeping), an unterminated `$$`.

use std::path::Path;
use std::process::Command;

use opskit_testkit::tools::run;
use opskit_testkit::{TestDb, cluster};

mod common;
use common::{migrate, migrate_within, write};

fn first(dir: &Path) {
    write(
        dir,
        "001_users.sql",
        "-- migrate:up\ncreate table users (id int primary key);\n-- migrate:down\ndrop table users;\n",
    );
}

/// `migrate plan`, `up` and `validate` refuse `name` (exit 64, one line
/// naming it and what it is) instead of reading it; none may hang.
fn refused_unread(db: &TestDb, dir: &Path, name: &str, what: &str) {
    for cmd in ["plan", "up", "validate"] {
        let out = run(migrate_within(30, db, dir).arg(cmd));
        assert_ne!(out.code, 124, "migrate {cmd} hung on {name}");
        assert_eq!(out.code, 64, "migrate {cmd}: {}", out.stderr);
        assert!(
            out.stderr.contains(name) && out.stderr.contains(what),
            "migrate {cmd}: {}",
            out.stderr
        );
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    }
}

#[test]
fn a_fifo_or_a_directory_among_the_migrations_is_refused_without_hanging() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    first(dir.path());
    let fifo = dir.path().join("002_pipe.sql");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    refused_unread(&db, dir.path(), "002_pipe.sql", "a FIFO");
    std::fs::remove_file(&fifo).unwrap();

    std::fs::create_dir(dir.path().join("002_dir.sql")).unwrap();
    refused_unread(&db, dir.path(), "002_dir.sql", "a directory");
    assert!(
        c.query(&db.name, "SELECT to_regclass('users')::text")
            .iter()
            .all(|r| r.is_empty()),
        "nothing was applied"
    );
}

/// The migration record's message and stderr of a failing `up`.
fn failing_up(db: &TestDb, dir: &Path) -> (String, String) {
    let out = run(migrate(db, dir).arg("up"));
    assert_eq!(out.code, 1, "{}", out.stderr);
    let m = out
        .events("migration")
        .into_iter()
        .find(|m| m["ok"] == false)
        .unwrap_or_else(|| panic!("no failed migration: {}", out.stdout));
    (m["message"].as_str().unwrap().to_string(), out.stderr)
}

#[test]
fn a_failing_migration_prints_one_line_and_no_server_warning() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    first(dir.path());
    // A runtime error, then a syntax error (which fails the section before
    // any of it runs).
    for (body, want) in [
        ("select * from no_such_table;", "002_bad.sql:2: relation"),
        ("selec 1;", "002_bad.sql:2: syntax error"),
    ] {
        write(
            dir.path(),
            "002_bad.sql",
            &format!("-- migrate:up\n{body}\n-- migrate:down\n"),
        );
        let (msg, stderr) = failing_up(&db, dir.path());
        assert!(msg.contains(want), "{msg}");
        assert!(!stderr.contains("WARNING"), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(want), "{stderr}");
    }
}

#[test]
fn an_unterminated_dollar_quote_is_one_line_naming_the_file_not_migrates_sql() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    first(dir.path());
    write(
        dir.path(),
        "002_fn.sql",
        "-- migrate:up\ncreate function f() returns int language plpgsql as $$\nbegin\n  return 1;\nend;\n-- migrate:down\ndrop function f();\n",
    );
    let (msg, stderr) = failing_up(&db, dir.path());
    assert!(
        msg.contains("002_fn.sql") && msg.contains("unterminated dollar-quoted string"),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
    for own in ["schema_migrations", "opskit_migrations", "COMMIT"] {
        assert!(!msg.contains(own), "quotes migrate's own SQL: {msg}");
        assert!(!stderr.contains(own), "quotes migrate's own SQL: {stderr}");
    }
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(
        c.query(&db.name, "SELECT version FROM schema_migrations ORDER BY 1"),
        vec!["001"]
    );
}
