//! The restore depth of a base set: unpack it into a scratch data directory
//! (its sha256 checked as it streams), run the real `pg_verifybackup` on it,
//! start a scratch cluster from it on a private socket that replays WAL to
//! the first consistent point (the WAL in the set, then the archive through
//! `walarchive fetch` when the backup root has one) and is promoted, read
//! every table of every database, then stop it and remove it all, also when
//! a step fails. The cluster is this run's child and ends with it, however
//! the run ends (SIGQUIT, its immediate shutdown); the directory of a run
//! that was killed is removed by the next ([`crate::leftovers`]).

use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opskit::backupset::{Manifest, PhysicalInfo};
use opskit::crypt::Identities;
use opskit::pgcatalog::table_row_counts;
use opskit::pgconn::{ConnSpec, describe_pg_error};
use opskit::pgtools::{self, PgTool};
use opskit::{Error, Result, physical};

use crate::checks::{Check, Name};

/// How long the scratch cluster may take to start, replay and promote.
const REPLAY_TIMEOUT: Duration = Duration::from_secs(1200);

/// What each run's directory in the scratch directory is called.
const PREFIX: &str = "opskit-replay-";

/// A scratch directory with a data directory and a socket directory, its
/// lock held; the cluster in it is stopped and everything removed when
/// dropped.
struct Scratch {
    dir: PathBuf,
    server: Option<Child>,
    _lock: fs::File,
}

impl Scratch {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn sock(&self) -> PathBuf {
        self.dir.join("sock")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }
    /// The server log's last lines that say something went wrong.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log()).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("FATAL") || l.contains("ERROR") || l.contains("PANIC"))
            .collect();
        let pick = if bad.is_empty() {
            text.lines().rev().take(3).collect::<Vec<_>>()
        } else {
            bad.into_iter().rev().take(3).collect()
        };
        pick.into_iter().rev().collect::<Vec<_>>().join("; ")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(mut server) = self.server.take() {
            // Immediate shutdown: nothing in it is kept.
            if matches!(server.try_wait(), Ok(None)) {
                let _ = opskit::sys::send(server.id(), opskit::sys::SIGQUIT);
            }
            let _ = server.wait();
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            log::error!("could not remove {}: {e}", self.dir.display());
        }
    }
}

/// Restore the base set `set` into a scratch cluster under `scratch_root`
/// and check it. Returns the checks and the time to a promoted cluster.
pub fn test(
    set: &Path,
    m: &Manifest,
    ids: Option<&Identities>,
    scratch_root: &Path,
    bindir: Option<&Path>,
    trust: &opskit::sign::Trust,
) -> Result<(Vec<Check>, Option<f64>)> {
    let info = m.physical.as_ref().expect("called for base sets");
    if opskit::sys::euid() == 0 {
        return Ok((
            vec![Check::fail(
                Name::Replay,
                None,
                "PostgreSQL does not run as root: run verify-backup as the cluster's owner (sudo -u postgres verify-backup …)",
            )],
            None,
        ));
    }
    let major = pgtools::major_of_num(info.server_version_num);
    let v = &info.server_version;
    let verifybackup =
        pgtools::find_exact("pg_verifybackup", major, v, bindir, "postgresql-client")?;
    let postgres = pgtools::find_exact("postgres", major, v, bindir, "postgresql")?;
    let start = Instant::now();
    fs::create_dir_all(scratch_root).map_err(|e| Error::io("creating", scratch_root, &e))?;
    crate::leftovers::remove(
        scratch_root,
        PREFIX,
        "the scratch cluster of a run that was killed",
        still_in_use,
    );
    let dir = scratch_root.join(format!(
        "{PREFIX}{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%H%M%S%3f")
    ));
    std::os::unix::fs::DirBuilderExt::mode(&mut fs::DirBuilder::new(), 0o700)
        .create(&dir)
        .map_err(|e| Error::io("creating", &dir, &e))?;
    let lock = match crate::leftovers::lock(&dir) {
        Ok(f) => f,
        Err(e) => {
            let _ = fs::remove_dir_all(&dir);
            return Err(Error::io("locking", &dir, &e));
        }
    };
    let mut scratch = Scratch {
        dir,
        server: None,
        _lock: lock,
    };
    fs::create_dir(scratch.sock()).map_err(|e| Error::io("creating", &scratch.sock(), &e))?;

    let mut checks = Vec::new();
    let file = physical::base_file(m).map(|f| f.name.clone());
    // A full set is unpacked, an incremental one combined with its chain,
    // each set passed by pg_verifybackup before anything is changed.
    let made = opskit::chain::resolve(set, m, trust)
        .map_err(|e| opskit::chain::Failed::Unpack(Error::check(e)))
        .and_then(|chain| {
            let n = chain.len();
            opskit::chain::materialize(&chain, ids, &scratch.data(), bindir, &verifybackup)
                .map(|_| n)
        });
    match made {
        Ok(n) => checks.push(Check::pass(
            Name::Verifybackup,
            None,
            if n == 1 {
                "pg_verifybackup: every file matches backup_manifest, the WAL parses".to_string()
            } else {
                format!("pg_verifybackup passed each of the chain's {n} sets; pg_combinebackup combined them")
            },
        )),
        Err(opskit::chain::Failed::Unpack(e)) => {
            checks.push(Check::fail(Name::Replay, file.as_deref(), e.msg));
            return Ok((checks, None));
        }
        Err(opskit::chain::Failed::Verify(e)) => {
            checks.push(Check::fail(Name::Verifybackup, None, e));
            return Ok((checks, None));
        }
    }
    let controldata = postgres.path.with_file_name("pg_controldata");
    let settings = write_recovery(&scratch, set, info, trust, &controldata)?;
    match start_and_promote(&mut scratch, &postgres, info, ids, &settings) {
        Ok(detail) => checks.push(Check::pass(Name::Replay, None, detail)),
        Err(e) => {
            checks.push(Check::fail(
                Name::Replay,
                None,
                format!("{e}: {}", scratch.log_tail()),
            ));
            return Ok((checks, None));
        }
    }
    let secs = opskit::record::secs(start.elapsed());
    checks.push(read_everything(&scratch, info));
    Ok((checks, Some(secs)))
}

/// Why the leftover directory `dir` is kept: it has no lock and the run
/// its name gives the pid of is alive (a version that held none), or the
/// postmaster its
/// `postmaster.pid` names still runs in it (its working directory is the
/// data directory; a pid reused since by another process is not one).
fn still_in_use(dir: &Path) -> Option<String> {
    // Without a lock (a version that held none), the run its name gives
    // the pid of may still be at work. (A free lock proves it is not.)
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let run: Option<u32> = name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok();
    if let Some(pid) = run.filter(|p| {
        !dir.join(crate::leftovers::LOCK).exists() && Path::new(&format!("/proc/{p}")).exists()
    }) {
        return Some(format!("the run that made it (pid {pid}) is alive"));
    }
    let data = dir.join("data");
    let text = fs::read_to_string(data.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    (cwd == fs::canonicalize(&data).ok()?).then(|| {
        format!(
            "its server (pid {pid}) still runs: pg_ctl -D {} stop -m immediate, and the next run removes it",
            data.display()
        )
    })
}

/// recovery.signal, and the settings that make the scratch cluster recover
/// to the first consistent point and promote, with WAL from the archive of
/// the set's backup root when there is one. Returns every setting the
/// cluster is started with ([`opskit::recovery::forced_settings`]): nothing
/// the set configures runs a command, loads a library or connects out.
fn write_recovery(
    scratch: &Scratch,
    set: &Path,
    info: &PhysicalInfo,
    trust: &opskit::sign::Trust,
    controldata: &Path,
) -> Result<Vec<(String, String)>> {
    let root = set.parent().unwrap_or(Path::new("."));
    let walarchive = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("walarchive")));
    let restore_command = match walarchive {
        Some(w) if opskit::walstore::has_dir(root) && w.is_file() => {
            // Run by `sh -c` after `%` expansion: quoted, `%` doubled.
            let q =
                |p: &Path| opskit::sys::shell_quote(&p.display().to_string().replace('%', "%%"));
            format!(
                "{} fetch %f %p --root {} --quiet {}",
                q(&w),
                q(root),
                trust.child_args().replace('%', "%%")
            )
        }
        // The WAL in the set only (archive recovery needs a command).
        _ => "false".into(),
    };
    let recovery = [
        ("recovery_target", "immediate".to_string()),
        ("recovery_target_action", "promote".into()),
        ("restore_command", restore_command),
    ];
    opskit::recovery::write_recovery(&scratch.data(), &info.superuser, &recovery)?;
    let hba = scratch.dir.join("hba.conf");
    opskit::durable::write_file(&hba, 0o600, b"local all all trust\n")?;
    let ident = scratch.dir.join("ident.conf");
    opskit::durable::write_file(&ident, 0o600, b"")?;
    // The primary's max_connections and the like, as its control file
    // has them (forced, not raised to): the set's own configuration may
    // have stayed on its machine.
    let mut ours = opskit::recovery::control_settings(controldata, &scratch.data());
    ours.extend(recovery.iter().cloned());
    ours.extend([
        // The set's postgresql.conf could name another data directory
        // (production's) or a pid file anywhere.
        ("data_directory", scratch.data().display().to_string()),
        (
            "external_pid_file",
            scratch.dir.join("external.pid").display().to_string(),
        ),
        ("port", "5432".to_string()),
        // A test, often on the production server itself: not a second
        // copy of production's shared memory.
        ("shared_buffers", "128MB".to_string()),
        (
            "unix_socket_directories",
            scratch.sock().display().to_string(),
        ),
        ("hba_file", hba.display().to_string()),
        ("ident_file", ident.display().to_string()),
    ]);
    let major = opskit::pgtools::major_of_num(info.server_version_num);
    Ok(opskit::recovery::forced_settings(major, &ours))
}

/// The scratch cluster's connection: its private socket, as the set's
/// bootstrap superuser.
fn spec(scratch: &Scratch, info: &PhysicalInfo, db: &str) -> Result<ConnSpec> {
    let user = if info.superuser.is_empty() {
        "postgres"
    } else {
        &info.superuser
    };
    let url = format!(
        "postgresql://{user}@/{db}?host={}&port=5432&connect_timeout=10",
        scratch.sock().display()
    );
    let mut spec = ConnSpec::resolve(Some(&url))?;
    let major = opskit::pgtools::major_of_num(info.server_version_num);
    spec.options = Some(opskit::recovery::session_options(major));
    Ok(spec)
}

/// Start the scratch cluster (no archiving, no TCP, trust on its private
/// socket only) as this run's child, and wait until recovery has ended.
fn start_and_promote(
    scratch: &mut Scratch,
    postgres: &PgTool,
    info: &PhysicalInfo,
    ids: Option<&Identities>,
    settings: &[(String, String)],
) -> std::result::Result<String, String> {
    let log = fs::OpenOptions::new()
        .create_new(true)
        .append(true)
        .mode(0o600)
        .open(scratch.log())
        .map_err(|e| format!("creating {}: {e}", scratch.log().display()))?;
    let mut cmd = Command::new(&postgres.path);
    if let Some(ids) = ids {
        // For `walarchive fetch` of an encrypted archive.
        cmd.env("OPSKIT_AGE_IDENTITY", ids.path());
    }
    cmd.arg("-D").arg(scratch.data());
    for (k, v) in settings {
        cmd.arg("-c").arg(format!("{k}={v}"));
    }
    let err = log.try_clone().map_err(|e| e.to_string())?;
    cmd.stdin(Stdio::null()).stdout(log).stderr(err);
    // Killed, the run takes its cluster with it (pg_ctl would detach it);
    // a Ctrl-C at the terminal is the run's to handle, not the cluster's.
    opskit::sys::end_with_parent(&mut cmd, opskit::sys::SIGQUIT);
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", postgres.path.display()))?;
    scratch.server = Some(child);
    let deadline = Instant::now() + REPLAY_TIMEOUT;
    let spec = spec(scratch, info, "postgres").map_err(|e| e.msg)?;
    loop {
        if let Ok(Some(status)) = scratch.server.as_mut().map_or(Ok(None), Child::try_wait) {
            return Err(format!("the scratch cluster stopped ({status})"));
        }
        let state = spec.connect().map_err(|e| e.msg).and_then(|mut c| {
            c.query_one(
                "SELECT pg_is_in_recovery(), timeline_id FROM pg_control_checkpoint()",
                &[],
            )
            .map(|r| (r.get::<_, bool>(0), r.get::<_, i32>(1)))
            .map_err(|e| describe_pg_error(&e))
        });
        match state {
            Ok((false, tli)) => {
                let forced: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
                return Ok(format!(
                    "replayed from {} past {} (consistent) and promoted (timeline {tli}); started with {} settings forced on the command line, none of the set's: {}",
                    info.start_lsn,
                    info.end_lsn,
                    forced.len(),
                    forced.join(", ")
                ));
            }
            Ok((true, _)) | Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok((true, _)) => return Err("still recovering after 20 minutes".into()),
            Err(e) => return Err(e),
        }
    }
}

/// Every table of every database, read to its end.
fn read_everything(scratch: &Scratch, info: &PhysicalInfo) -> Check {
    let counted = (|| -> Result<(usize, usize, u64)> {
        let mut admin = spec(scratch, info, "postgres")?.connect()?;
        let dbs: Vec<String> = admin
            .query(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .map_err(|e| Error::failure(describe_pg_error(&e)))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let (mut tables, mut rows) = (0usize, 0u64);
        for db in &dbs {
            let mut c = spec(scratch, info, db)?.connect()?;
            let counts = table_row_counts(&mut c)
                .map_err(|e| Error::failure(format!("{db}: {}", describe_pg_error(&e))))?;
            tables += counts.len();
            rows += counts.values().sum::<u64>();
        }
        Ok((dbs.len(), tables, rows))
    })();
    match counted {
        Ok((dbs, tables, rows)) => Check::pass(
            Name::TablesReadable,
            None,
            format!("{dbs} databases, {tables} tables read, {rows} rows"),
        ),
        Err(e) => Check::fail(Name::TablesReadable, None, e.msg),
    }
}
