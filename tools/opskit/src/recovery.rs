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
        // It starts beside production, or on a smaller machine: never
        // refused for want of the huge pages production holds (a set with
        // huge_pages = on would not start).
        ("huge_pages", "try"),
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

/// The locale settings a configuration file may hold, each checked against
/// the machine's locales when the server starts.
pub const LOCALE_SETTINGS: [&str; 4] = ["lc_messages", "lc_monetary", "lc_numeric", "lc_time"];

/// Create `recovery.signal`, remove a `standby.signal` the set brought (a
/// standby's backup: it would make the cluster a standby of production),
/// write stand-ins of the configuration files a set may lack
/// ([`stand_ins`], `superuser` its bootstrap superuser), and append
/// `settings` to `postgresql.auto.conf` (later lines win; the command line
/// wins over them all).
pub fn write_recovery(data: &Path, superuser: &str, settings: &[(&str, String)]) -> Result<()> {
    use std::io::Write;
    stand_in_config(data, superuser)?;
    let standby = data.join("standby.signal");
    match fs::remove_file(&standby) {
        Ok(()) => log::info!("removed {} (from a standby's backup)", standby.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(crate::Error::io("removing", &standby, &e)),
    }
    crate::durable::write_file(&data.join("recovery.signal"), 0o600, b"")?;
    let mut conf = String::from("\n# written by opskit for recovery\n");
    // The copy speaks English (restore-pitr.sh reads its messages) and
    // needs no locale of production's machine: a later line makes the
    // server skip an earlier one unchecked, so a set whose configuration
    // names a locale this machine lacks (lc_messages = 'de_DE.UTF-8':
    // "invalid value", FATAL at start, whatever the command line says)
    // still starts.
    for k in LOCALE_SETTINGS {
        conf.push_str(&format!("{k} = 'C'\n"));
    }
    for (k, v) in settings {
        conf.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    let path = data.join("postgresql.auto.conf");
    let mut f =
        crate::safefs::open_nofollow(&path, fs::OpenOptions::new().append(true).create(true))?;
    f.write_all(conf.as_bytes()).at("writing", &path)?;
    f.sync_all().at("syncing", &path)
}

/// The files a server reads from its data directory unless told
/// otherwise, which a cluster whose configuration lives elsewhere (Debian
/// and Ubuntu keep it in /etc/postgresql/VERSION/NAME) leaves out of its
/// base backups: without `postgresql.conf` the server does not start.
/// Each one missing is written, empty of settings, so the server starts
/// on its defaults, `postgresql.auto.conf` and the command line. The
/// stand-in `pg_hba.conf` lets in, over the socket only, the operating
/// system user this runs as (the server's), as itself or as the set's
/// bootstrap superuser `superuser`, and root as that superuser (peer, and
/// its map in `pg_ident.conf`).
fn stand_ins(superuser: &str) -> [(&'static str, String); 3] {
    // A name pg_ident.conf reads as one: quoted, quotes doubled; one with
    // a control character (a newline would start a line of its own) is
    // left out.
    let quoted = |n: &str| {
        (!n.is_empty() && !n.chars().any(char::is_control))
            .then(|| format!("\"{}\"", n.replace('"', "\"\"")))
    };
    let me = crate::sys::user_name(crate::sys::euid());
    if me.is_none() {
        log::warn!(
            "uid {} has no name in /etc/passwd: the stand-in pg_ident.conf maps root only",
            crate::sys::euid()
        );
    }
    let me = me.as_deref().and_then(quoted);
    let role = quoted(superuser).or_else(|| me.clone());
    let mut ident = String::new();
    for (user, as_role) in [(&me, &role), (&me, &me), (&Some("root".into()), &role)] {
        if let (Some(u), Some(r)) = (user, as_role) {
            ident.push_str(&format!("opskit {u} {r}\n"));
        }
    }
    let head = "# Written by opskit: the base set had none (its server's configuration\n\
                # lives outside its data directory).\n";
    [
        (
            "postgresql.conf",
            format!("{head}# Defaults, postgresql.auto.conf and the command line apply.\n"),
        ),
        (
            "pg_hba.conf",
            format!("{head}local all all peer map=opskit\n"),
        ),
        // root may become any user anyway.
        ("pg_ident.conf", format!("{head}{ident}")),
    ]
}

/// Write the stand-ins of [`stand_ins`] missing from `data`, never over
/// anything there (a link included).
fn stand_in_config(data: &Path, superuser: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    for (name, text) in stand_ins(superuser) {
        let path = data.join(name);
        let mut f = match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(crate::Error::io("creating", &path, &e)),
        };
        f.write_all(text.as_bytes()).at("writing", &path)?;
        f.sync_all().at("syncing", &path)?;
        log::info!(
            "{}: the set has none (its server's configuration lives elsewhere); a stand-in was written",
            path.display()
        );
    }
    Ok(())
}

/// The settings a recovery needs at least the primary's values of
/// (`max_connections` and four more), as the control file of `data`
/// records them, read with `pg_controldata` (the server's, beside its
/// `pg_ctl`). A copy started with less stops at once ("insufficient
/// parameter settings"): a configuration left on the primary's machine
/// (the stand-ins above give the defaults) must not be what decides.
/// Empty when `pg_controldata` is not there or fails.
pub fn control_settings(pg_controldata: &Path, data: &Path) -> Vec<(&'static str, String)> {
    const FIELDS: [(&str, &str); 5] = [
        ("max_connections setting", "max_connections"),
        ("max_worker_processes setting", "max_worker_processes"),
        ("max_wal_senders setting", "max_wal_senders"),
        ("max_prepared_xacts setting", "max_prepared_transactions"),
        ("max_locks_per_xact setting", "max_locks_per_transaction"),
    ];
    let out = match std::process::Command::new(pg_controldata)
        .arg("-D")
        .arg(data)
        .env("LC_ALL", "C")
        .output()
    {
        Ok(o) if o.status.success() => o.stdout,
        _ => return Vec::new(),
    };
    let text = String::from_utf8_lossy(&out);
    text.lines()
        .filter_map(|l| {
            let (label, value) = l.split_once(':')?;
            let (_, name) = FIELDS.iter().find(|(f, _)| *f == label.trim())?;
            let n: u32 = value.trim().parse().ok()?;
            Some((*name, n.to_string()))
        })
        .collect()
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
        assert_eq!(get(&s, "huge_pages").unwrap(), "try");
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
        write_recovery(
            d.path(),
            "postgres",
            &[("recovery_target", "immediate".into())],
        )
        .unwrap();
        assert!(!d.path().join("standby.signal").exists());
        assert!(d.path().join("recovery.signal").exists());
    }

    /// A set without the configuration files (Debian's layout) gets
    /// stand-ins, 0600; a set with its own keeps them, and a planted link
    /// is not written through.
    #[test]
    fn missing_configuration_files_get_stand_ins_and_nothing_else_is_touched() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let data = d.path().join("data");
        fs::create_dir(&data).unwrap();
        fs::write(data.join("postgresql.conf"), "port = 5555\n").unwrap();
        let target = d.path().join("elsewhere");
        std::os::unix::fs::symlink(&target, data.join("pg_ident.conf")).unwrap();
        write_recovery(&data, "app \"admin\"", &[]).unwrap();
        assert_eq!(
            fs::read_to_string(data.join("postgresql.conf")).unwrap(),
            "port = 5555\n"
        );
        assert!(!target.exists(), "written through a link");
        let hba = data.join("pg_hba.conf");
        assert!(
            fs::read_to_string(&hba)
                .unwrap()
                .ends_with("local all all peer map=opskit\n")
        );
        assert_eq!(
            fs::metadata(&hba).unwrap().permissions().mode() & 0o777,
            0o600
        );

        let fresh = d.path().join("fresh");
        fs::create_dir(&fresh).unwrap();
        write_recovery(&fresh, "app \"admin\"", &[]).unwrap();
        let ident = fs::read_to_string(fresh.join("pg_ident.conf")).unwrap();
        assert!(ident.contains(" \"app \"\"admin\"\"\"\n"), "{ident}");
        assert!(
            fs::read_to_string(fresh.join("postgresql.conf"))
                .unwrap()
                .starts_with('#')
        );

        // A newline in the set's superuser would start a line of its own.
        let hostile = d.path().join("hostile");
        fs::create_dir(&hostile).unwrap();
        write_recovery(&hostile, "x\nopskit nobody x", &[]).unwrap();
        let ident = fs::read_to_string(hostile.join("pg_ident.conf")).unwrap();
        assert!(!ident.contains("nobody"), "{ident}");
    }
}
