//! Controlling the server (stop, start, restart) and running things as its
//! user: the PITR drill and the replay depth start PostgreSQL themselves,
//! which does not run as root.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::Cluster;

impl Cluster {
    /// Stop the server (fast shutdown: sessions are disconnected). Only for
    /// a test that holds a [`Cluster::create_db_alone`] database.
    pub fn stop(&self) {
        let _g = self.state.lock().unwrap();
        self.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"], None)
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Start the server again after [`Cluster::stop`].
    pub fn start(&self) {
        let _g = self.state.lock().unwrap();
        self.pg_ctl(&["start", "-w", "-t", "60", "-l"], Some("server.log"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Restart the server (every session is cut).
    pub fn restart(&self) {
        let _g = self.state.lock().unwrap();
        self.pg_ctl(
            &["restart", "-m", "fast", "-w", "-t", "60", "-l"],
            Some("server.log"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Run `cmd` as the server's user (postgres, when the tests run as
    /// root), with HOME in the cluster's directory.
    pub fn as_server_user<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env("HOME", &self.root)
    }

    /// Give `path` (and what is under it) to the server's user.
    pub fn give(&self, path: &Path) {
        if let Some((uid, gid)) = self.run_as {
            let st = Command::new("chown")
                .arg("-R")
                .arg(format!("{uid}:{gid}"))
                .arg(path)
                .status()
                .unwrap();
            assert!(st.success(), "chown {}", path.display());
        }
    }

    /// The shell commands that stop and start this server the way the
    /// harness does (for procedures that take OPSKIT_PG_STOP/START).
    pub fn stop_start_commands(&self) -> (String, String) {
        let pg_ctl = self.bindir.join("pg_ctl");
        (
            format!(
                "{} -D {} stop -m fast -w -t 60",
                pg_ctl.display(),
                self.data().display()
            ),
            format!(
                "{} -D {} start -w -t 60 -l {}",
                pg_ctl.display(),
                self.data().display(),
                self.root.join("server.log").display()
            ),
        )
    }
}
