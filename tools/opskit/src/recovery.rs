//! Starting a cluster from a base set without trusting the set.
//!
//! A base set carries its cluster's configuration (`postgresql.conf`,
//! `postgresql.auto.conf`, `standby.signal`). Several settings run commands
//! or load libraries (`recovery_end_command`, `archive_command`,
//! `shared_preload_libraries`…) and some talk to other servers
//! (`primary_conninfo`, `primary_slot_name`): a scratch cluster started
//! with them would run a forged set's commands, or stream from the
//! production primary and take its replication slot. So every such setting
//! is given on the command line, where it wins over every configuration
//! file, with a harmless value or opskit's own ([`forced_settings`]), and
//! `standby.signal` is removed ([`write_recovery`]).

use std::fs;
use std::path::Path;

use crate::{IoContext, Result};

/// The settings forced on a cluster started from a base set of PostgreSQL
/// `major`, with `ours` (restore_command, recovery targets, port…) in the
/// place of the defaults. Later entries win.
pub fn forced_settings(major: u32, ours: &[(&str, String)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        // Commands PostgreSQL runs.
        ("archive_mode", "off"),
        ("archive_command", ""),
        ("restore_command", ""),
        ("recovery_end_command", ""),
        ("archive_cleanup_command", ""),
        ("ssl", "off"),
        ("ssl_passphrase_command", ""),
        // Libraries it loads.
        ("shared_preload_libraries", ""),
        ("session_preload_libraries", ""),
        ("local_preload_libraries", ""),
        ("dynamic_library_path", "$libdir"),
        ("jit", "off"),
        ("jit_provider", "llvmjit"),
        // Other servers it talks to.
        ("primary_conninfo", ""),
        ("primary_slot_name", ""),
        // No delay. (Recovery targets are not forced empty: an empty one
        // on the command line unsets opskit's own; a target the set adds
        // beside opskit's makes PostgreSQL refuse to start, which is safe.)
        ("recovery_min_apply_delay", "0"),
        // Files it writes outside the data directory (external_pid_file
        // cannot be unset on the command line: it only ever writes a pid).
        ("logging_collector", "off"),
        ("log_destination", "stderr"),
        // No network.
        ("listen_addresses", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if major >= 15 {
        out.push(("archive_library".into(), String::new()));
    }
    if major >= 17 {
        out.push(("event_triggers".into(), "off".into()));
    }
    if major >= 18 {
        out.push(("oauth_validator_libraries".into(), String::new()));
    }
    for (k, v) in ours {
        match out.iter_mut().find(|(have, _)| have == k) {
            Some(slot) => slot.1 = v.clone(),
            None => out.push((k.to_string(), v.clone())),
        }
    }
    out
}

/// What a connection to a cluster started from a base set sends at its
/// start (libpq `options`, PGOPTIONS): per-role and per-database settings
/// of the set (`ALTER ROLE … SET session_preload_libraries`, a
/// `search_path` with the set's own functions first) come after these and
/// lose; on 17+ login event triggers are off.
pub fn session_options(major: u32) -> String {
    let mut o = String::from(
        "-c search_path=pg_catalog -c session_preload_libraries= -c local_preload_libraries= -c jit=off",
    );
    if major >= 17 {
        o.push_str(" -c event_triggers=off");
    }
    o
}

/// The settings as `pg_ctl -o` text: `-c name='value'` each, quoted for
/// the shell pg_ctl hands it to.
pub fn pg_ctl_options(settings: &[(String, String)]) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("-c {k}='{}'", v.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Create `recovery.signal`, remove a `standby.signal` the set brought (a
/// standby's backup: it would make the cluster a standby of production),
/// and append `settings` to `postgresql.auto.conf` (later lines win; the
/// command line wins over them all).
pub fn write_recovery(data: &Path, settings: &[(&str, String)]) -> Result<()> {
    use std::io::Write;
    let standby = data.join("standby.signal");
    match fs::remove_file(&standby) {
        Ok(()) => log::info!("removed {} (from a standby's backup)", standby.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::Error::io("removing", &standby, &e)),
    }
    crate::durable::write_file(&data.join("recovery.signal"), 0o600, b"")?;
    let mut conf = String::from("\n# written by opskit for recovery\n");
    for (k, v) in settings {
        conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    let path = data.join("postgresql.auto.conf");
    let mut f =
        crate::safefs::open_nofollow(&path, fs::OpenOptions::new().append(true).create(true))?;
    f.write_all(conf.as_bytes()).at("writing", &path)?;
    f.sync_all().at("syncing", &path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ours_win_and_versions_differ() {
        let s = forced_settings(14, &[("restore_command", "walarchive fetch %f %p".into())]);
        let get = |s: &[(String, String)], k: &str| {
            s.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(
            get(&s, "restore_command").unwrap(),
            "walarchive fetch %f %p"
        );
        assert_eq!(get(&s, "recovery_end_command").unwrap(), "");
        assert!(get(&s, "archive_library").is_none());
        let s18 = forced_settings(18, &[]);
        assert_eq!(get(&s18, "archive_library").unwrap(), "");
        assert_eq!(get(&s18, "oauth_validator_libraries").unwrap(), "");
        let o = pg_ctl_options(&[("restore_command".into(), "echo 'x' %f".into())]);
        assert_eq!(o, r"-c restore_command='echo '\''x'\'' %f'");
    }

    #[test]
    fn a_standby_signal_is_removed() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("standby.signal"), "").unwrap();
        write_recovery(d.path(), &[("recovery_target", "immediate".into())]).unwrap();
        assert!(!d.path().join("standby.signal").exists());
        assert!(d.path().join("recovery.signal").exists());
    }
}
