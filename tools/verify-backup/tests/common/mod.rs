//! Helpers for verify-backup's integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, TestDb, bin};

/// The checks of a run's verify records that passed (`ok`) or failed, as
/// "name file detail" lines (file `-` when the check is about the set).
pub fn check_lines(out: &opskit_testkit::Output, ok: bool) -> Vec<String> {
    out.events("verify")
        .iter()
        .flat_map(|r| r["checks"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["ok"] == ok)
        .map(|c| {
            format!(
                "{} {} {}",
                c["name"].as_str().unwrap(),
                c["file"].as_str().unwrap_or("-"),
                c["detail"].as_str().unwrap()
            )
        })
        .collect()
}

/// The failed checks of a run, one line each.
pub fn failed_checks(out: &opskit_testkit::Output) -> Vec<String> {
    check_lines(out, false)
}

pub fn verify() -> Command {
    let mut c = opskit_testkit::signing::command(env!("CARGO_BIN_EXE_verify-backup"));
    c.env_remove("OPSKIT_LOG");
    c
}

/// A real gzip set of `db` under `root`, with globals and a files archive
/// (zstd sets, the default, have tests of their own in zstd.rs).
pub fn make_set(c: &Cluster, db: &TestDb, root: &Path) -> PathBuf {
    make_set_with(c, db, root, &["--compress", "gzip"])
}

/// [`make_set`] with more pgbackup arguments (`--compress zstd`).
pub fn make_set_with(c: &Cluster, db: &TestDb, root: &Path, extra: &[&str]) -> PathBuf {
    let files = root.join("appfiles");
    fs::create_dir_all(files.join("sub")).unwrap();
    fs::write(files.join("a.txt"), "hello\n".repeat(1000)).unwrap();
    fs::write(
        files.join("sub/b.bin"),
        (0..50_000u32)
            .map(|i| (i * 7 % 251) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let out = run(opskit_testkit::signing::command(bin("pgbackup"))
        .args(["--dest"])
        .arg(root.join("sets"))
        .args(["--db", &db.url, "--row-counts", "--globals", "--pg-bindir"])
        .arg(c.bindir())
        .arg("--files")
        .arg(&files)
        .args(extra));
    assert_eq!(out.code, 0, "{}", out.stderr);
    PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap())
}

pub fn seed(c: &Cluster, db: &TestDb, rows: u32) {
    c.query(
        &db.name,
        &format!(
            "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, {rows}) g; \
             CREATE TABLE \"Odd Name\" (x int); INSERT INTO \"Odd Name\" VALUES (1), (2), (3);"
        ),
    );
}

pub fn copy_set(set: &Path, to: &Path) -> PathBuf {
    let dest = to.join(set.file_name().unwrap());
    let st = Command::new("cp")
        .arg("-a")
        .arg(set)
        .arg(&dest)
        .status()
        .unwrap();
    assert!(st.success());
    dest
}

/// The scratch databases a run names on stderr.
pub fn scratch_names(stderr: &str) -> Vec<String> {
    stderr
        .split("scratch database ")
        .skip(1)
        .filter_map(|r| r.split_whitespace().next().map(String::from))
        .collect()
}

/// Wait until verify-backup `pid` has its scratch database (named
/// opskit_verify_<pid>_...: other tests of this binary create and drop
/// databases meanwhile); the query that counts it.
pub fn wait_for_scratch(c: &Cluster, pid: u32) -> String {
    let mine = format!(
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'opskit\\_verify\\_{pid}\\_%'"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while c.query("postgres", &mine) != vec!["1"] {
        assert!(
            std::time::Instant::now() < deadline,
            "scratch database never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    mine
}
