//! A primary and its streaming standby, one pair per test binary: the
//! standby is copied from the primary with `pg_basebackup -C -S standby`
//! (a physical replication slot), streams over the primary's Unix socket,
//! and is a hot standby with `archive_mode = always`, so both servers can
//! archive the same WAL (through `walarchive`, once a test sets an
//! `archive_command`). A test can wait for the standby to catch up, stop
//! its WAL receiver, kill the primary and promote the standby.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Cluster, SUPERUSER, Setup, start_once};

/// The physical replication slot the standby streams from.
pub const SLOT: &str = "standby";

/// Where a standby copies its data from and streams from.
pub(crate) struct Upstream {
    socket: PathBuf,
    port: u16,
}

/// The primary of a pair and its standby.
pub struct Pair {
    pub primary: &'static Cluster,
    pub standby: &'static Cluster,
}

const PRIMARY_CONF: &str = "wal_level = replica\narchive_mode = on\narchive_command = ''\n\
     archive_timeout = 0\nmax_wal_senders = 10\nmax_replication_slots = 10\n\
     wal_sender_timeout = 10s\nfull_page_writes = on\n";

/// The pair of this test binary, started on first use. Both write full
/// page images (a backup taken on a standby refuses WAL written without
/// them, which the other test clusters save). The standby does not
/// ask the primary to keep rows for its queries (`hot_standby_feedback =
/// off`, the default) and cancels a query that holds replay up for more
/// than a second: the settings under which a recovery conflict happens.
pub fn pair() -> Pair {
    static PRIMARY: OnceLock<Cluster> = OnceLock::new();
    static STANDBY: OnceLock<Cluster> = OnceLock::new();
    let primary = start_once(&PRIMARY, || Setup {
        conf: PRIMARY_CONF.into(),
        ..Setup::default()
    });
    let standby = start_once(&STANDBY, || Setup {
        conf: format!(
            "primary_conninfo = 'host={} port={} user={SUPERUSER} application_name=standby'\n\
             primary_slot_name = '{SLOT}'\nhot_standby = on\nhot_standby_feedback = off\n\
             max_standby_streaming_delay = 1s\nwal_receiver_status_interval = 1s\n\
             archive_mode = always\narchive_command = ''\narchive_timeout = 0\n\
             full_page_writes = on\n",
            primary.socket_dir().display(),
            primary.port()
        ),
        standby_of: Some(Upstream {
            socket: primary.socket_dir(),
            port: primary.port(),
        }),
        ..Setup::default()
    });
    let p = Pair { primary, standby };
    p.wait_streaming();
    p
}

impl Cluster {
    /// The data directory as a copy of the upstream's, with a slot of its
    /// own there and `standby.signal`: what `initdb` is for a primary.
    pub(crate) fn copy_from(&self, up: &Upstream) -> Result<(), String> {
        let out = self
            .cmd("pg_basebackup")
            .arg("-D")
            .arg(self.data())
            .arg("-h")
            .arg(&up.socket)
            .args(["-p", &up.port.to_string(), "-U", SUPERUSER])
            .args(["-X", "stream", "-C", "-S", SLOT, "-c", "fast", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running pg_basebackup: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pg_basebackup of the primary failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let signal = self.data().join("standby.signal");
        std::fs::write(&signal, "").map_err(|e| format!("{}: {e}", signal.display()))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&signal, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// Stop the server the hard way (`pg_ctl stop -m immediate`: no
    /// shutdown checkpoint, as after a crash or a power loss).
    pub fn kill(&self) {
        let _g = self.state.lock().unwrap();
        self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "60"], None)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// `pg_ctl promote`: a standby becomes a primary on a new timeline.
    pub fn promote(&self) {
        let _g = self.state.lock().unwrap();
        self.pg_ctl(&["promote", "-w", "-t", "60"], None)
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Pair {
    /// Wait until the standby has replayed everything the primary has
    /// written so far. The clusters commit asynchronously: what is only in
    /// the primary's WAL buffers is sent once its WAL writer flushes it, so
    /// the target is the insert position, not the written one.
    pub fn wait_replayed(&self) {
        let lsn = self
            .primary
            .query("postgres", "SELECT pg_current_wal_insert_lsn()::text")[0]
            .clone();
        let sql = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
        wait_for(&format!("the standby to replay up to {lsn}"), || {
            self.standby.query("postgres", &sql)[0] == "t"
        });
    }

    /// Wait until the standby's WAL receiver streams from the primary.
    pub fn wait_streaming(&self) {
        wait_for("the standby to stream", || {
            self.standby.query(
                "postgres",
                "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'",
            )[0] == "1"
        });
    }
}

/// Poll `ok` every 50 ms for up to a minute.
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
