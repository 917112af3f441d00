//! The cluster's configuration files: the setup's files, the settings in
//! `postgresql.auto.conf`, and Debian's layout (the configuration in a
//! directory of its own) when the setup asks for it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use super::Cluster;

impl Cluster {
    /// The setup's files (and pg_hba.conf) in the data directory.
    pub(super) fn write_files(&self) -> Result<(), String> {
        let hba = self.setup.hba.as_ref().map(|h| ("pg_hba.conf", h.clone()));
        for (name, text) in self.setup.files.iter().cloned().chain(hba) {
            let p = self.data().join(name);
            fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600))
                .map_err(|e| e.to_string())?;
            if let Some((uid, gid)) = self.run_as {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// The configuration's own directory, in Debian's layout.
    pub(super) fn etc(&self) -> PathBuf {
        self.root.join("etc")
    }

    pub(super) fn move_conf_outside(&self) -> Result<(), String> {
        let Some(lines) = &self.setup.conf_outside else {
            return Ok(());
        };
        let etc = self.etc();
        fs::create_dir(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        let names = ["postgresql.conf", "pg_hba.conf", "pg_ident.conf"];
        for name in names {
            fs::rename(self.data().join(name), etc.join(name))
                .map_err(|e| format!("{name}: {e}"))?;
        }
        let conf = etc.join("postgresql.conf");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&conf)
            .map_err(|e| format!("{}: {e}", conf.display()))?;
        write!(
            f,
            "\nhba_file = '{}'\nident_file = '{}'\n{lines}",
            etc.join("pg_hba.conf").display(),
            etc.join("pg_ident.conf").display()
        )
        .map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = self.run_as {
            for p in std::iter::once(etc.clone()).chain(names.iter().map(|n| etc.join(n))) {
                std::os::unix::fs::chown(&p, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    pub(super) fn write_conf(&self) -> Result<(), String> {
        let listen = match self.setup.listen {
            "" => "127.0.0.1",
            l => l,
        };
        let conf = format!(
            "listen_addresses = '{listen}'\nport = {}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 60\nshared_buffers = 64MB\nmax_wal_size = 1GB\n\
             log_min_messages = warning\n{}",
            self.port,
            self.socket_dir().display(),
            self.setup.conf,
        );
        let p = self.data().join("postgresql.auto.conf");
        let mut f = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&p)
            .map_err(|e| format!("{}: {e}", p.display()))?;
        f.write_all(conf.as_bytes()).map_err(|e| e.to_string())
    }
}
