//! Running the procedures in `scripts/` from tests: an env file (the way
//! operators configure them) pointing at the test cluster and temp dirs,
//! and the tools this workspace built.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{bin, run};
use crate::{Cluster, TestDb};

/// A configured place to run procedures in.
pub struct Procs {
    pub dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
}

impl Procs {
    /// An env file for database `db` of the test cluster, with the backup
    /// root, state and metrics directories in a fresh temp dir.
    pub fn new(c: &Cluster, db: &str) -> Procs {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let mut p = Procs { dir, vars: vec![] };
        p.set("DATABASE_URL", &c.url(db));
        p.set("OPSKIT_BACKUP_ROOT", &format!("{d}/backups"));
        p.set("OPSKIT_STATE_DIR", &format!("{d}/state"));
        p.set("OPSKIT_METRICS_DIR", &format!("{d}/metrics"));
        p.set("OPSKIT_PG_BINDIR", &c.bindir().display().to_string());
        p.set("OPSKIT_HEALTH_WAIT", "20s");
        for (k, v) in crate::signing::keys().env() {
            p.set(k, &v);
        }
        p
    }

    /// Set a variable in the env file (quoted as a shell word).
    pub fn set(&mut self, key: &str, value: &str) {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.into(), value.into()));
        let vars = self.vars.iter().map(|(k, v)| (k.as_str(), v.as_str()));
        std::fs::write(self.env_file(), crate::sh::env_text(vars)).unwrap();
    }

    pub fn env_file(&self) -> PathBuf {
        self.dir.path().join("opskit.env")
    }

    /// An application directory `uploads/` holding `a.txt` ("an upload"),
    /// backed up with the database (`OPSKIT_BACKUP_FILES`).
    pub fn add_uploads(&mut self) {
        std::fs::create_dir(self.path("uploads")).unwrap();
        std::fs::write(self.path("uploads/a.txt"), "an upload").unwrap();
        let dir = self.path("uploads");
        self.set("OPSKIT_BACKUP_FILES", dir.to_str().unwrap());
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The backup root.
    pub fn root(&self) -> PathBuf {
        self.path("backups")
    }

    /// Complete sets under the root, oldest first.
    pub fn sets(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.root())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| !n.starts_with('.') && n != "verified.ndjson")
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|n| n.rsplit('-').next().unwrap_or("").to_string());
        v
    }

    /// A metrics file's samples as (name{labels}, value).
    pub fn metrics(&self, file: &str) -> Vec<(String, f64)> {
        let text = std::fs::read_to_string(self.path("metrics").join(file)).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap();
                (k.to_string(), v.parse().unwrap())
            })
            .collect()
    }

    pub fn metric(&self, file: &str, name: &str) -> f64 {
        self.metrics(file)
            .into_iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("no {name} in {file}"))
            .1
    }

    /// A procedure, configured by the env file only.
    pub fn script(&self, name: &str) -> Command {
        let mut c = Command::new(crate::sh::scripts().join(name));
        self.configure(&mut c);
        c
    }

    /// Give any command the procedures' environment: the env file, the
    /// workspace's tools, and no PG* or DATABASE_URL from the caller.
    pub fn configure(&self, c: &mut Command) {
        let tools = bin("healthcheck");
        c.env("OPSKIT_ENV", self.env_file())
            .env("OPSKIT_BIN", tools.parent().unwrap())
            .env_remove("DATABASE_URL")
            .env_remove("OPSKIT_LOG")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .env_remove("PGUSER")
            .env_remove("PGDATABASE")
            .env_remove("PGPASSWORD");
    }
}

/// A database holding the example application: `examples/migrations`
/// applied by migrate, and `examples/seed.sql`'s rows.
pub fn example_app(c: &'static Cluster) -> TestDb {
    let db = c.create_db();
    let out = run(Command::new(bin("migrate")).args([
        "--db",
        &db.url,
        "--dir",
        &examples_dir().join("migrations").display().to_string(),
        "up",
    ]));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let seed = std::fs::read_to_string(examples_dir().join("seed.sql")).unwrap();
    c.client(&db.name).batch_execute(&seed).unwrap();
    db
}

pub fn examples_dir() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples")).to_path_buf()
}

/// pg_dump's text of a database without the tables named (`-T`), minus
/// the per-run random `\restrict` key.
pub fn dump(c: &Cluster, db: &str, exclude: &[&str]) -> String {
    let mut cmd = Command::new(c.bindir().join("pg_dump"));
    cmd.args(["--no-owner", "-d", &c.url(db)]);
    for t in exclude {
        cmd.args(["-T", t]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}
