//! migrate beside the real dbmate (npm's package, which `make test`
//! installs into .deps/): the table it creates and the db/schema.sql it
//! writes are dbmate's, byte for byte (#20 items 9 and 10).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, TestDb, cluster};

fn dbmate() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.deps/npm/node_modules/.bin/dbmate");
    assert!(
        p.exists(),
        "npm's dbmate is needed at {} (make test installs it)",
        p.display()
    );
    p
}

fn migrate(db: &TestDb, dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_migrate"));
    c.args(["--db", &db.url, "--dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env_remove("DBMATE_SCHEMA_FILE")
        .env_remove("OPSKIT_LOG");
    c
}

fn dbmate_cmd(db: &TestDb, dir: &Path) -> Command {
    let mut c = Command::new(dbmate());
    let sep = if db.url.contains('?') { '&' } else { '?' };
    c.arg("--url")
        .arg(format!("{}{sep}sslmode=disable", db.url))
        .arg("--migrations-dir")
        .arg(dir)
        .env_remove("DATABASE_URL");
    c
}

fn migrations(dir: &Path) {
    fs::write(
        dir.join("20261101090000_users.sql"),
        "-- migrate:up\ncreate table users (id int primary key, name text);\ncreate index users_name on users (name);\n-- migrate:down\ndrop table users;\n",
    )
    .unwrap();
    fs::write(
        dir.join("20261102090000_orders.sql"),
        "-- migrate:up\ncreate table orders (id bigserial primary key, user_id int references users);\n-- migrate:down\ndrop table orders;\n",
    )
    .unwrap();
}

fn table_dump(c: &Cluster, db: &TestDb) -> String {
    c.run_bin(
        "pg_dump",
        &db.name,
        &["--schema-only", "--no-owner", "--table=schema_migrations"],
    )
    .lines()
    .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
    .collect::<Vec<_>>()
    .join("\n")
}

#[test]
fn schema_migrations_is_created_as_dbmate_creates_it() {
    let c = cluster();
    let (by_dbmate, by_migrate) = (c.create_db(), c.create_db());
    let dir = tempfile::tempdir().unwrap();
    migrations(dir.path());
    let out = run(dbmate_cmd(&by_dbmate, dir.path()).args(["--no-dump-schema", "up"]));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = run(migrate(&by_migrate, dir.path()).arg("up"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(table_dump(c, &by_dbmate), table_dump(c, &by_migrate));
    assert_eq!(
        c.query(
            &by_migrate.name,
            "SELECT data_type, character_maximum_length IS NULL FROM information_schema.columns WHERE table_name = 'schema_migrations'"
        ),
        vec!["character varying|t"]
    );
}

#[test]
fn versions_longer_than_128_characters_work() {
    let c = cluster();
    let db = c.create_db();
    let dir = tempfile::tempdir().unwrap();
    let version = "2".repeat(150);
    fs::write(
        dir.path().join(format!("{version}_long.sql")),
        "-- migrate:up\ncreate table t (id int);\n-- migrate:down\ndrop table t;\n",
    )
    .unwrap();
    let out = run(migrate(&db, dir.path()).arg("up"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        c.query(&db.name, "SELECT length(version) FROM schema_migrations"),
        vec!["150"]
    );
    assert_eq!(run(migrate(&db, dir.path()).arg("down")).code, 0);
}

#[test]
fn dump_schema_writes_the_file_dbmate_writes() {
    let c = cluster();
    let (by_dbmate, by_migrate) = (c.create_db(), c.create_db());
    let dir = tempfile::tempdir().unwrap();
    let mig = dir.path().join("migrations");
    fs::create_dir(&mig).unwrap();
    migrations(&mig);
    let theirs = dir.path().join("dbmate/schema.sql");
    let ours = dir.path().join("opskit/schema.sql");
    let out = run(dbmate_cmd(&by_dbmate, &mig)
        .arg("--schema-file")
        .arg(&theirs)
        .arg("up"));
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    let out = run(migrate(&by_migrate, &mig)
        .arg("--dump-schema")
        .arg("--schema-file")
        .arg(&ours)
        .arg("up"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let (theirs_text, ours_text) = (
        fs::read_to_string(&theirs).unwrap(),
        fs::read_to_string(&ours).unwrap(),
    );
    assert!(
        ours_text.contains("CREATE TABLE public.orders"),
        "{ours_text}"
    );
    assert!(!ours_text.contains("opskit_migrations"), "{ours_text}");
    assert_eq!(ours_text, theirs_text);
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(&ours).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    // down writes it again, without the rolled-back version; without
    // --dump-schema nothing is written.
    let out = run(migrate(&by_migrate, &mig)
        .args(["--dump-schema", "--schema-file"])
        .arg(&ours)
        .arg("down"));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let after = fs::read_to_string(&ours).unwrap();
    assert!(!after.contains("'20261102090000'"), "{after}");
    assert!(after.contains("'20261101090000'"), "{after}");
    fs::remove_file(&ours).unwrap();
    assert_eq!(run(migrate(&by_migrate, &mig).arg("up")).code, 0);
    assert!(!ours.exists());
}
