//! Finding and running the real PostgreSQL client tools (`pg_dump`,
//! `pg_dumpall`, `pg_restore`, `psql`): the version that matches the server,
//! their stderr, and their lifetime.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::thread::JoinHandle;

use crate::{Error, Result};

/// A client tool found on this machine, with its version.
#[derive(Debug, Clone)]
pub struct PgTool {
    pub path: PathBuf,
    /// e.g. `15.18`
    pub version: String,
    /// e.g. 15 (or 906 for 9.6)
    pub major: u32,
}

/// Major version of a `server_version_num` (150018 → 15, 90624 → 906).
pub fn major_of_num(num: u32) -> u32 {
    if num >= 100_000 {
        num / 10_000
    } else {
        num / 100
    }
}

/// Major version of a version string (`15.18` → 15, `9.6.24` → 906).
pub fn major_of_version(v: &str) -> Option<u32> {
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let a: u32 = parts.next()?.parse().ok()?;
    if a >= 10 {
        Some(a)
    } else {
        let b: u32 = parts.next()?.parse().ok()?;
        Some(a * 100 + b)
    }
}

/// `pg_dump (PostgreSQL) 15.18 (Debian ...)` → `15.18`.
fn probe(path: &Path) -> Option<PgTool> {
    let out = Command::new(path).arg("--version").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()))?
        .to_string();
    Some(PgTool {
        major: major_of_version(&version)?,
        path: path.to_path_buf(),
        version,
    })
}

/// Every installed copy of `tool`: under `bindir` only when given; else
/// Debian's `/usr/lib/postgresql/*/bin`, `pg_config --bindir`, and `PATH`.
fn candidates(tool: &str, bindir: Option<&Path>) -> Vec<PathBuf> {
    if let Some(d) = bindir {
        return vec![d.join(tool)];
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(tool))
        .filter(|p| p.exists())
        .collect();
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        v.push(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join(tool));
    }
    if let Some(path) = std::env::var_os("PATH") {
        v.extend(std::env::split_paths(&path).map(|d| d.join(tool)));
    }
    v.retain(|p| p.exists());
    v.dedup();
    v
}

/// The copy of `tool` to use with a server of major version `server_major`:
/// the same major if installed, else the oldest newer one. A tool older
/// than the server is refused, naming both versions.
pub fn find(
    tool: &str,
    server_major: u32,
    server_version: &str,
    bindir: Option<&Path>,
) -> Result<PgTool> {
    let mut found: Vec<PgTool> = candidates(tool, bindir)
        .iter()
        .filter_map(|p| probe(p))
        .collect();
    if found.is_empty() {
        return Err(Error::failure(match bindir {
            Some(d) => format!("no working {tool} in {}", d.display()),
            None => format!(
                "no {tool} found; install the PostgreSQL {server_version} client (postgresql-client-{}) or pass --pg-bindir",
                display_major(server_major)
            ),
        }));
    }
    found.sort_by_key(|t| t.major);
    if let Some(t) = found.iter().find(|t| t.major >= server_major) {
        return Ok(t.clone());
    }
    let newest = found.last().expect("not empty");
    Err(Error::failure(format!(
        "{tool} {} at {} is older than the server ({server_version}); a dump by an older {tool} \
         may not restore. Install postgresql-client-{} or pass --pg-bindir",
        newest.version,
        newest.path.display(),
        display_major(server_major)
    )))
}

/// The copy of `tool` of exactly major `major`: a server for a base set's
/// data directory, or the pg_verifybackup that reads its control file
/// (another major's misreads it: "pg_control: CRC is incorrect"). None
/// installed (under --pg-bindir, when given) is one line naming the version
/// needed and the Debian package that brings it (`package`-MAJOR).
pub fn find_exact(
    tool: &str,
    major: u32,
    server_version: &str,
    bindir: Option<&Path>,
    package: &str,
) -> Result<PgTool> {
    let found: Vec<PgTool> = candidates(tool, bindir)
        .iter()
        .filter_map(|p| probe(p))
        .collect();
    if let Some(t) = found.iter().find(|t| t.major == major) {
        return Ok(t.clone());
    }
    let m = display_major(major);
    let others: Vec<String> = found
        .iter()
        .map(|t| format!("{} {}", t.path.display(), t.version))
        .collect();
    let seen = if others.is_empty() {
        String::new()
    } else {
        format!("; found only {} (another major version)", others.join(", "))
    };
    let where_ = match bindir {
        Some(d) => format!(" in {}", d.display()),
        None => String::new(),
    };
    Err(Error::failure(format!(
        "PostgreSQL {m}'s {tool} is needed for a set of PostgreSQL {server_version} and is not installed{where_}{seen}: install {package}-{m} (PGDG's repository has every version) or point --pg-bindir at its bindir"
    )))
}

fn display_major(m: u32) -> String {
    if m >= 100 {
        format!("{}.{}", m / 100, m % 100)
    } else {
        m.to_string()
    }
}

/// Collects a child's stderr on a thread: every line is logged at debug
/// level, and the last lines are kept for the error message.
pub struct StderrTail {
    handle: Option<JoinHandle<Vec<String>>>,
}

impl StderrTail {
    pub fn start(child: &mut Child, tool: &'static str) -> Self {
        let handle = child.stderr.take().map(|s| {
            std::thread::spawn(move || {
                let mut tail: Vec<String> = Vec::new();
                for line in BufReader::new(s.take(1 << 20)).lines() {
                    let Ok(line) = line else { break };
                    log::debug!("{tool}: {line}");
                    tail.push(line);
                    if tail.len() > 12 {
                        tail.remove(0);
                    }
                }
                tail
            })
        });
        StderrTail { handle }
    }

    /// The child's messages in one line: `tool: ` prefixes dropped, joined by `; `.
    pub fn summary(self) -> String {
        summarise(&self.lines())
    }

    /// The last lines the child wrote (at most 12), as written.
    pub fn lines(mut self) -> Vec<String> {
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// `pg_dump: error: X` / `pg_dump: detail: Y` → `X; Y`, at most 600 chars.
/// Why a hot standby cancelled a dump to go on replaying WAL (a recovery
/// conflict), and the settings that prevent it.
pub const RECOVERY_CONFLICT_HINT: &str = "the standby cancelled it to go on replaying the primary's WAL \
     (a recovery conflict); set hot_standby_feedback = on on the standby (the primary then keeps \
     the rows the dump still reads) or raise max_standby_streaming_delay above the dump's \
     duration, or take the backup from the primary";

/// [`RECOVERY_CONFLICT_HINT`] for an error a standby gave when replay
/// cancelled a query or ended a session; None for any other error.
pub fn recovery_conflict_hint(msg: &str) -> Option<&'static str> {
    msg.contains("conflict with recovery")
        .then_some(RECOVERY_CONFLICT_HINT)
}

/// `msg`, followed by [`RECOVERY_CONFLICT_HINT`] when it is a recovery
/// conflict's error.
pub fn with_conflict_hint(msg: &str) -> String {
    match recovery_conflict_hint(msg) {
        Some(h) => format!("{msg}: {h}"),
        None => msg.to_string(),
    }
}

/// [`summarise`] of a finished tool's stderr.
pub fn summarise_stderr(stderr: &[u8]) -> String {
    let lines: Vec<String> = String::from_utf8_lossy(stderr)
        .lines()
        .map(str::to_string)
        .collect();
    summarise(&lines)
}

pub fn summarise(lines: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for l in lines {
        let mut t = l.trim();
        for prefix in [
            "pg_dump: ",
            "pg_dumpall: ",
            "pg_restore: ",
            "psql: ",
            "pg_basebackup: ",
            "pg_verifybackup: ",
        ] {
            t = t.strip_prefix(prefix).unwrap_or(t);
        }
        for prefix in ["error: ", "detail: ", "hint: "] {
            t = t.strip_prefix(prefix).unwrap_or(t);
        }
        if !t.is_empty() {
            parts.push(t.to_string());
        }
    }
    let mut s = parts.join("; ");
    if s.len() > 600 {
        let mut cut = 600;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// Kills and reaps a child when dropped before [`ChildGuard::wait`].
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already waited for")
    }
    pub fn wait(mut self) -> std::io::Result<std::process::ExitStatus> {
        self.0.take().expect("child already waited for").wait()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_bindir() -> PathBuf {
        candidates("pg_dump", None)
            .into_iter()
            .filter_map(|p| probe(&p))
            .max_by_key(|t| t.major)
            .and_then(|t| t.path.parent().map(Path::to_path_buf))
            .expect("no pg_dump installed")
    }

    #[test]
    fn majors() {
        assert_eq!(major_of_num(150018), 15);
        assert_eq!(major_of_num(90624), 906);
        assert_eq!(major_of_version("15.18"), Some(15));
        assert_eq!(major_of_version("9.6.24"), Some(906));
        assert_eq!(major_of_version("17beta1"), Some(17));
        assert_eq!(major_of_version("x"), None);
    }

    #[test]
    fn stderr_is_summarised_in_one_line() {
        let lines: Vec<String> = [
            "pg_dump: error: Dumping the contents of table \"big\" failed: PQgetResult() failed.",
            "pg_dump: detail: Error message from server: server closed the connection unexpectedly",
            "pg_dump: detail: Command was: COPY public.big (id) TO stdout;",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let s = summarise(&lines);
        assert!(
            s.starts_with("Dumping the contents of table \"big\" failed"),
            "{s}"
        );
        assert!(
            s.contains("; Error message from server: server closed"),
            "{s}"
        );
        assert!(!s.contains('\n'));
    }

    #[test]
    fn older_tool_is_refused_naming_both_versions() {
        let bindir = test_bindir();
        let e = find("pg_dump", 99, "99.1", Some(&bindir)).unwrap_err();
        assert!(e.msg.contains("older than the server (99.1)"), "{}", e.msg);
        assert!(e.msg.contains("pg_dump 1"), "{}", e.msg);
        let t = find("pg_dump", 15, "15.1", Some(&bindir)).unwrap();
        assert!(t.major >= 15);
        let e = find("pg_dump", 15, "15.1", Some(Path::new("/nonexistent"))).unwrap_err();
        assert!(
            e.msg.contains("no working pg_dump in /nonexistent"),
            "{}",
            e.msg
        );
    }
}
