//! Helpers for pgbackup's integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use opskit_testkit::{Cluster, TestDb};

pub fn pgbackup(c: &Cluster, db: &TestDb, dest: &Path) -> Command {
    let mut cmd = opskit_testkit::signing::command(env!("CARGO_BIN_EXE_pgbackup"));
    cmd.arg("--dest")
        .arg(dest)
        .arg("--db")
        .arg(&db.url)
        .arg("--pg-bindir")
        .arg(c.bindir())
        .env_remove("DATABASE_URL")
        .env_remove("OPSKIT_LOG");
    cmd
}

/// Names in a directory, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Completed sets in a backup root.
pub fn sets(root: &Path) -> Vec<PathBuf> {
    names(root)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .map(|n| root.join(n))
        .collect()
}

/// Temporary (in-progress or leftover) directories in a backup root.
pub fn temps(root: &Path) -> Vec<String> {
    names(root)
        .into_iter()
        .filter(|n| opskit::durable::is_temp_name(n))
        .collect()
}

/// Fill `db` with `rows` rows of poorly compressible text (about 100 bytes each).
pub fn fill(c: &Cluster, db: &TestDb, rows: u32) {
    c.query(
        &db.name,
        &format!(
            "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) AS v \
             FROM generate_series(1, {rows}) g"
        ),
    );
}

/// Wait until `f` is true or panic after `secs`.
pub fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Size of the dump being written into the (only) temp dir of `root`.
pub fn staged_dump_bytes(root: &Path) -> u64 {
    temps(root)
        .first()
        .and_then(|t| {
            let dir = root.join(t);
            fs::metadata(dir.join("db.dump.gz"))
                .or_else(|_| fs::metadata(dir.join("db.dump.zst")))
                .ok()
        })
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Pids of children of `parent` whose command name is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let name = &stat[stat.find('(').unwrap() + 1..close];
        let ppid: u32 = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if ppid == parent && name == comm {
            out.push(pid);
        }
    }
    out
}

pub fn signal(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "kill -{sig} {pid}");
}
