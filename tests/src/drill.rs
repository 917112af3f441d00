//! The point-in-time recovery drill's setup: copies of the tools and
//! scripts the server's user can run, a backup root it owns, an env file,
//! and the cluster archiving into that root through `walarchive push`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::sh::scripts;
use crate::tools::{bin, run};
use crate::{Cluster, TestDb};

/// What the drill runs with: copies of the tools and scripts the server's
/// user can run, a backup root it owns, and an env file.
pub struct Drill {
    pub c: &'static Cluster,
    /// Where the tools, scripts, env file and backup root are.
    pub dir: PathBuf,
    /// The drill's database.
    pub db: String,
    _db: TestDb,
}

impl Drill {
    /// A drill on `c`, an archiving cluster (archive_mode = on) whose
    /// archive_command it sets to `walarchive push` into its root.
    pub fn on(c: &'static Cluster) -> Drill {
        // `drill`, or `drill-2`... for the next drill on the same server.
        let dir = (1..)
            .map(|n| match n {
                1 => c.root().join("drill"),
                n => c.root().join(format!("drill-{n}")),
            })
            .take(100)
            .find(|d| fs::create_dir(d).is_ok())
            .expect("no drill directory could be made");
        fs::create_dir_all(dir.join("bin")).unwrap();
        for t in [
            "pgbackup",
            "verify-backup",
            "walarchive",
            "healthcheck",
            "prune",
        ] {
            fs::copy(bin(t), dir.join("bin").join(t)).unwrap();
        }
        let st = Command::new("cp")
            .arg("-r")
            .arg(scripts())
            .arg(dir.join("scripts"))
            .status()
            .unwrap();
        assert!(st.success());
        fs::create_dir_all(dir.join("backups")).unwrap();
        let held = c.create_db();
        let d = Drill {
            c,
            dir,
            db: held.name.clone(),
            _db: held,
        };
        let (stop, start) = c.stop_start_commands();
        let keys = crate::signing::keys();
        let key = keys.copy_for(c, &d.dir);
        let env = [
            ("OPSKIT_SIGNING_KEY", key.display().to_string()),
            ("OPSKIT_SIGNING_PUBKEYS", keys.public.clone()),
            ("DATABASE_URL", c.url(&d.db)),
            ("OPSKIT_BACKUP_ROOT", d.root().display().to_string()),
            (
                "OPSKIT_STATE_DIR",
                d.dir.join("state").display().to_string(),
            ),
            ("OPSKIT_PG_BINDIR", c.bindir().display().to_string()),
            ("OPSKIT_PGDATA", c.data().display().to_string()),
            ("OPSKIT_PG_STOP", stop),
            ("OPSKIT_PG_START", start),
            ("OPSKIT_HEALTH_WAIT", "20s".into()),
        ];
        let text: String = env.iter().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect();
        fs::write(d.dir.join("opskit.env"), text).unwrap();
        c.give(&d.dir);
        assert_eq!(key, d.dir.join("signing.key"));
        d.archive_from(c);
        d
    }

    /// Make `server` archive into the drill's root too (a standby with
    /// `archive_mode = always` archives the same WAL as its primary).
    pub fn archive_from(&self, server: &Cluster) {
        let cmd = format!(
            "{} -q push %p %f --root {} --signing-key {}",
            self.dir.join("bin/walarchive").display(),
            self.root().display(),
            self.dir.join("signing.key").display()
        );
        server.query(
            "postgres",
            &format!("ALTER SYSTEM SET archive_command = '{cmd}'"),
        );
        server.query("postgres", "SELECT pg_reload_conf()");
    }

    /// A base set of `from` (the drill's server or its standby) in the
    /// drill's root, taken by pgbackup --physical: its path.
    pub fn take_base(&self, from: &Cluster) -> PathBuf {
        let out = run(self
            .tool("pgbackup")
            .args(["--physical", "--dest"])
            .arg(self.root())
            .arg("--db")
            .arg(from.url(&self.db)));
        assert!(
            out.code == 0,
            "pgbackup --physical: {}\n{}",
            out.stdout,
            out.stderr
        );
        PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap())
    }

    /// Set one variable of the drill's env file.
    pub fn set(&self, key: &str, value: &str) {
        let file = self.dir.join("opskit.env");
        let text = fs::read_to_string(&file).unwrap();
        let mut kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key}=")))
            .map(|l| format!("{l}\n"))
            .collect();
        kept.push_str(&format!("{key}=\"{value}\"\n"));
        fs::write(&file, kept).unwrap();
    }

    pub fn root(&self) -> PathBuf {
        self.dir.join("backups")
    }

    /// A tool or script, run as the server's user.
    pub fn cmd(&self, prog: &Path) -> Command {
        let mut cmd = Command::new(prog);
        self.c.as_server_user(&mut cmd);
        cmd.env("OPSKIT_ENV", self.dir.join("opskit.env"))
            .env("OPSKIT_BIN", self.dir.join("bin"))
            .env(
                "PATH",
                format!("{}:/usr/bin:/bin", self.c.bindir().display()),
            )
            .env("OPSKIT_SIGNING_PUBKEYS", &crate::signing::keys().public)
            .env("OPSKIT_SIGNING_KEY", self.dir.join("signing.key"))
            .env_remove("DATABASE_URL")
            .env_remove("OPSKIT_BACKUP_ROOT")
            .env_remove("OPSKIT_PITR_ROOT")
            .env_remove("OPSKIT_AGE_IDENTITY")
            .env_remove("OPSKIT_LOG");
        cmd
    }

    /// `verify-backup --record --replay` of `set` with its scratch
    /// clusters under `scratch` (the weekly restore test of base sets).
    pub fn replay(&self, set: &Path, scratch: &Path) -> Command {
        let mut cmd = self.tool("verify-backup");
        cmd.args(["--record", "--replay", "--scratch"])
            .arg(scratch)
            .arg(set);
        cmd
    }

    pub fn tool(&self, name: &str) -> Command {
        self.cmd(&self.dir.join("bin").join(name))
    }

    pub fn script(&self, name: &str) -> Command {
        self.cmd(&self.dir.join("scripts").join(name))
    }

    /// Switch to a new segment and wait until the server has archived it.
    pub fn archive_now(&self) {
        archive_now(self.c);
    }

    /// The time now (UTC, to the microsecond), then `DELETE FROM orders`
    /// after it, archived: the mistake a recovery to that time undoes.
    pub fn time_then_delete(&self) -> String {
        let t = utc_now(self.c);
        std::thread::sleep(Duration::from_millis(20));
        self.c.query(&self.db, "DELETE FROM orders");
        self.archive_now();
        t
    }

    /// `restore-system.sh --to T --into SIDE` on a free port: its output,
    /// and the port the recovered cluster listens on.
    pub fn recover_to(&self, t: &str, side: &Path) -> (crate::Output, u16) {
        let port = crate::pg::free_port();
        let out = run(self
            .script("restore-system.sh")
            .args(["--to", t, "--port", &port.to_string(), "--into"])
            .arg(side));
        (out, port)
    }

    /// (count, max id) of orders on a recovered cluster's private socket.
    pub fn side_orders(&self, socket: &Path, port: u16) -> (i64, i64) {
        let mut cl = postgres::Config::new()
            .host_path(socket)
            .port(port)
            .user(crate::pg::SUPERUSER)
            .dbname(&self.db)
            .connect(postgres::NoTls)
            .unwrap();
        let r = cl
            .query_one("SELECT count(*), coalesce(max(id), 0) FROM orders", &[])
            .unwrap();
        (r.get(0), r.get(1))
    }

    pub fn stop_side(&self, data: &Path) {
        let out = run(self
            .cmd(&self.c.bindir().join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .args(["stop", "-m", "fast", "-w"]));
        assert!(out.code == 0, "{}", out.stderr);
    }
}

/// Switch `c` to a new WAL segment and wait until it has archived it.
pub fn archive_now(c: &Cluster) {
    let seg = c.query("postgres", "SELECT pg_walfile_name(pg_switch_wal())")[0].clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = c.query(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        );
        if last[0] >= seg {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{seg} was not archived: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The time now on `c`'s clock, UTC to the microsecond, as a recovery
/// target (`2026-12-07T01:28:44.877584Z`).
pub fn utc_now(c: &Cluster) -> String {
    c.query(
        "postgres",
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    )[0]
    .clone()
}
