//! Helpers for migrate's integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::Path;
use std::process::Command;

use opskit_testkit::TestDb;

/// `migrate --db URL --dir DIR`, with no setting from the environment.
pub fn migrate(db: &TestDb, dir: &Path) -> Command {
    on(Command::new(env!("CARGO_BIN_EXE_migrate")), db, dir)
}

/// [`migrate`] under coreutils' `timeout`: exit 124 when it hangs.
pub fn migrate_within(secs: u32, db: &TestDb, dir: &Path) -> Command {
    let mut c = Command::new("timeout");
    c.arg(secs.to_string()).arg(env!("CARGO_BIN_EXE_migrate"));
    on(c, db, dir)
}

fn on(mut c: Command, db: &TestDb, dir: &Path) -> Command {
    c.args(["--db", &db.url, "--dir"])
        .arg(dir)
        .env_remove("DATABASE_URL")
        .env_remove("OPSKIT_LOG");
    c
}

pub fn write(dir: &Path, name: &str, body: &str) {
    fs::write(dir.join(name), body).unwrap();
}
