//! The point-in-time recovery setup exactly as `make install` prints it
//! and docs/backup-restore.md gives it: the archive_command line is taken
//! from install.sh's output (and must be the guide's), only its machine
//! paths pointed at a temp dir, and a real server archives through it. WAL
//! lands encrypted and signed; without the recipients it is refused beside
//! encrypted sets, never stored in plaintext.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use opskit_testkit::age::Key;
use opskit_testkit::sh::repo;
use opskit_testkit::signing::command;
use opskit_testkit::tools::run;
use opskit_testkit::wal::archiving_cluster;
use opskit_testkit::{Cluster, bin};

/// The archive_command line `make install` prints, and the guide's.
fn documented_archive_command(dest: &Path) -> String {
    let tools = bin("pgbackup");
    let out = run(Command::new(repo().join("scripts/install.sh"))
        .env("DESTDIR", dest)
        .env("OPSKIT_BUILD_DIR", tools.parent().unwrap()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("archive_command = "))
        .unwrap_or_else(|| panic!("no archive_command in: {}", out.stdout))
        .to_string();
    let guide = fs::read_to_string(repo().join("docs/backup-restore.md")).unwrap();
    assert!(
        guide.contains(&format!("archive_command = {line}")),
        "the guide's archive_command is not the one make install prints: {line}"
    );
    // Incremental base sets (17+): the same two lines in both.
    for l in ["summarize_wal = on", "wal_summary_keep_time = '10d'"] {
        assert!(out.stdout.contains(&format!("  {l}\n")), "install.sh: {l}");
        assert!(guide.contains(l), "the guide: {l}");
    }
    line.trim_matches('\'').to_string()
}

fn archived(c: &Cluster) -> (u64, u64) {
    let r = c.query(
        "postgres",
        "SELECT archived_count || ' ' || failed_count FROM pg_stat_archiver",
    );
    let mut it = r[0].split(' ').map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn set_archive_command(c: &Cluster, cmd: &str) {
    c.query(
        "postgres",
        &format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            cmd.replace('\'', "''")
        ),
    );
    c.query("postgres", "SELECT pg_reload_conf()");
}

#[test]
fn wal_is_archived_encrypted_and_signed_with_the_documented_setup() {
    let c = archiving_cluster();
    let dest = tempfile::tempdir().unwrap();
    let cmd = documented_archive_command(dest.path());
    // The machine's paths, in a directory the server's user can use.
    let dir = tempfile::Builder::new()
        .prefix("opskit-setup-")
        .tempdir_in(c.root())
        .unwrap();
    let d = dir.path();
    fs::create_dir_all(d.join("bin")).unwrap();
    fs::copy(bin("walarchive"), d.join("bin/walarchive")).unwrap();
    let key = Key::new(d, "oncall.key");
    fs::write(
        d.join("recipients.txt"),
        format!("# on-call\n{}\n", key.public),
    )
    .unwrap();
    let signing = dest.path().join("etc/opskit/signing");
    fs::copy(signing.join("postgres.key"), d.join("postgres.key")).unwrap();
    let public = fs::read_to_string(signing.join("postgres.key.pub")).unwrap();
    let public = public.lines().nth(1).unwrap().to_string();
    let root = d.join("pitr");
    let local = cmd
        .replace(
            "/usr/local/bin/walarchive",
            &d.join("bin/walarchive").display().to_string(),
        )
        .replace("/var/backups/opskit-pitr", &root.display().to_string())
        .replace(
            "/etc/opskit/recipients.txt",
            &d.join("recipients.txt").display().to_string(),
        )
        .replace(
            "/etc/opskit/signing/postgres.key",
            &d.join("postgres.key").display().to_string(),
        );
    assert!(
        !local.contains("/etc/") && !local.contains("/var/"),
        "{local}"
    );

    // An encrypted base set in the root first, as the nightly job makes it.
    let db = c.create_db();
    let out = run(command(bin("pgbackup"))
        .arg("--dest")
        .arg(&root)
        .args(["--physical", "--db", &db.url, "--encrypt-to", &key.public])
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    c.give(d);

    // Without its recipients the archiver refuses, and stores nothing.
    let plain = local.replace(
        &format!(" --encrypt-to-file {}", d.join("recipients.txt").display()),
        "",
    );
    assert_ne!(plain, local);
    set_archive_command(c, &plain);
    let (_, failed) = archived(c);
    c.query(
        &db.name,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g",
    );
    c.query("postgres", "SELECT pg_switch_wal()");
    wait(|| archived(c).1 > failed, "the archiver to fail");
    assert!(
        stored(&root)
            .iter()
            .all(|f| f.ends_with(".age") || f.ends_with(".sha256")),
        "{:?}",
        stored(&root)
    );

    // As documented: encrypted and signed.
    let (before, _) = archived(c);
    set_archive_command(c, &local);
    wait(|| archived(c).0 > before, "the archiver");
    let name = last_archived(c).unwrap();
    let tli = root.join("wal").join(&name[..8]);
    assert!(
        tli.join(format!("{name}.zst.age")).is_file(),
        "{:?}",
        stored(&root)
    );
    let side = fs::read_to_string(tli.join(format!("{name}.sha256"))).unwrap();
    assert!(
        side.contains(&format!("trusted comment: opskit-wal {name}")),
        "{side}"
    );
    // fetch checks it against the public key make install wrote.
    let back = d.join("back");
    let out = run(command(bin("walarchive"))
        .args(["fetch", &name])
        .arg(&back)
        .arg("--root")
        .arg(&root)
        .arg("--identity")
        .arg(&key.identity)
        .env("OPSKIT_SIGNING_PUBKEYS", &public));
    assert_eq!(out.code, 0, "{}", out.stderr);
    set_archive_command(c, "");
}

fn last_archived(c: &Cluster) -> Option<String> {
    let r = c.query(
        "postgres",
        "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
    );
    (!r[0].is_empty()).then(|| r[0].clone())
}

fn stored(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(rd) = fs::read_dir(root.join("wal")) {
        for tli in rd.flatten() {
            for f in fs::read_dir(tli.path()).unwrap().flatten() {
                let n = f.file_name().to_string_lossy().into_owned();
                if !n.starts_with('.') {
                    out.push(n);
                }
            }
        }
    }
    out
}

fn wait(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "waited 60 s for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
