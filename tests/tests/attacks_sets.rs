//! A set is data, never code (docs/security.md): sets forged as an attacker
//! with the bucket's or the backup disk's write access would forge them,
//! restored and verified by the real procedures and tools. Each test first
//! shows the forgery refused by its signature, then plays an attacker who
//! also stole the signing key (the set signed again) to show that the next
//! defence holds on its own: nothing from the set runs as a command.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::forge::{compress, decompress, edit_manifest, put_file};
use opskit_testkit::procs::Procs;
use opskit_testkit::signing::{command, resign};
use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, Output, TestDb, bin, cluster};

/// A database with one table of 100 rows, and procedures configured for it.
fn app(c: &'static Cluster) -> (TestDb, Procs) {
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 100) g",
    );
    let p = Procs::new(c, &db.name);
    (db, p)
}

/// A verified gzip set of the database (globals and more with `extra`).
fn backup(c: &Cluster, db: &TestDb, p: &Procs, extra: &[&str]) -> PathBuf {
    let out = run(command(bin("pgbackup"))
        .arg("--dest")
        .arg(p.root())
        .args(["--db", &db.url, "--compress", "gzip", "--row-counts"])
        .arg("--pg-bindir")
        .arg(c.bindir())
        .args(extra));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let set = PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap());
    let v = run(command(bin("verify-backup")).arg("--record").arg(&set));
    assert_eq!(v.code, 0, "{}", v.stdout);
    set
}

fn rows(c: &Cluster, db: &str) -> String {
    c.query(db, "SELECT count(*) FROM items")[0].clone()
}

fn restore(p: &Procs, set: &Path, extra: &[&str]) -> Output {
    run(p
        .script("restore-system.sh")
        .args(["--yes", "--no-health"])
        .args(extra)
        .arg(set))
}

/// The manifest's restore_command, run with `bash -c` as root by
/// restore-system.sh until now, is never run: not from a forged set, not
/// from one signed with a stolen key.
#[test]
fn a_forged_restore_command_never_runs() {
    let c = cluster();
    let (db, p) = app(c);
    let set = backup(c, &db, &p, &[]);
    let pwned = p.path("PWNED");
    edit_manifest(&set, |m| {
        let cmd = m["database"]["restore_command"]
            .as_str()
            .unwrap()
            .to_string();
        m["database"]["restore_command"] = format!("touch {}; {cmd}", pwned.display()).into();
    });
    c.query(&db.name, "DELETE FROM items WHERE id > 10");

    let out = restore(&p, &set, &[]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let errors: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.stderr);
    assert!(
        errors[0].contains("signature")
            && errors[0].contains(set.file_name().unwrap().to_str().unwrap()),
        "{}",
        errors[0]
    );
    assert!(!pwned.exists(), "the forged command ran");
    assert_eq!(rows(c, &db.name), "10", "the database was touched");

    resign(&set);
    let out = restore(&p, &set, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!pwned.exists(), "the manifest's restore_command ran");
    assert_eq!(
        rows(c, &db.name),
        "100",
        "restored by the tool's own pg_restore"
    );
}

/// psql meta-commands in a set's globals.sql (`\!` runs a shell as root)
/// are refused: the SQL reaches psql only under `\restrict`.
#[test]
fn a_meta_command_in_the_globals_never_runs() {
    let c = cluster();
    let (db, p) = app(c);
    let set = backup(c, &db, &p, &["--globals"]);
    let pwned = p.path("PWNED");
    let sql = format!(
        "\\! touch {}\nCREATE ROLE opskit_forged_role;\n\\o |touch {}.o\nSELECT 1;\n\n-- PostgreSQL database cluster dump complete\n\n",
        pwned.display(),
        pwned.display()
    );
    put_file(
        &set,
        "globals.sql.gz",
        "globals",
        &compress("gzip", sql.as_bytes()),
    );
    let out = restore(&p, &set, &[]);
    assert_eq!(out.code, 2, "a forged set is refused: {}", out.stderr);
    resign(&set);
    let out = restore(&p, &set, &[]);
    assert!(!pwned.exists(), "\\! ran: {}", out.stderr);
    assert!(!p.path("PWNED.o").exists(), "\\o | ran: {}", out.stderr);
    assert_eq!(out.code, 0, "{}", out.stderr);
    // The SQL around the refused meta-commands is plain SQL and ran.
    let role = c.query(
        "postgres",
        "SELECT count(*) FROM pg_roles WHERE rolname = 'opskit_forged_role'",
    );
    assert_eq!(role, ["1"]);
    c.query("postgres", "DROP ROLE opskit_forged_role");
}

/// A plain-format dump with a `\!` line: verify-backup's restore test used
/// to run it as the verifying user and report the set good.
#[test]
fn a_meta_command_in_a_plain_dump_fails_the_restore_test_and_never_runs() {
    let c = cluster();
    let (db, p) = app(c);
    let set = backup(c, &db, &p, &["--format", "plain"]);
    let pwned = p.path("PWNED");
    let name = "db.sql.gz";
    let text = String::from_utf8(decompress("gzip", &fs::read(set.join(name)).unwrap())).unwrap();
    let forged = text.replacen(
        "SET statement_timeout = 0;",
        &format!("SET statement_timeout = 0;\n\\! touch {}", pwned.display()),
        1,
    );
    assert_ne!(forged, text);
    put_file(&set, name, "database", &compress("gzip", forged.as_bytes()));
    edit_manifest(&set, |m| {
        m["database"]["file"] = name.into();
    });
    resign(&set);
    let out = run(command(bin("verify-backup"))
        .arg("--restore-into")
        .arg(c.url("postgres"))
        .arg("--pg-bindir")
        .arg(c.bindir())
        .arg(&set));
    assert!(!pwned.exists(), "\\! ran during the restore test");
    assert_eq!(out.code, 1, "{}", out.stdout);
    let restore = &out.events("verify")[0]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "restore")
        .cloned()
        .unwrap();
    assert_eq!(restore["ok"], false, "{restore}");
    assert!(
        restore["detail"].as_str().unwrap().contains("restricted"),
        "{restore}"
    );
}

/// A tar with `count` entries written by Python's tarfile: a root-owned
/// setuid shell, a world-writable device node, a FIFO, and with `escape`
/// a symlink out of the target and a file written through it.
fn evil_tar(outside: &Path, escape: bool) -> Vec<u8> {
    let script = r##"
import io, sys, tarfile
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    def add(name, kind, mode, data=b"", link=""):
        i = tarfile.TarInfo(name)
        i.type, i.mode, i.uid, i.gid, i.uname, i.gname = kind, mode, 0, 0, "root", "root"
        i.size, i.linkname = len(data), link
        if kind == tarfile.CHRTYPE:
            i.devmajor, i.devminor = 1, 3
        t.addfile(i, io.BytesIO(data))
    add("app/rootshell", tarfile.REGTYPE, 0o4755, b"#!/bin/sh\nid\n")
    add("app/sgid", tarfile.REGTYPE, 0o2755, b"x")
    add("app/null", tarfile.CHRTYPE, 0o666)
    add("app/pipe", tarfile.FIFOTYPE, 0o666)
    add("app/ok.txt", tarfile.REGTYPE, 0o644, b"fine")
    if sys.argv[2] == "1":
        add("app/out", tarfile.SYMTYPE, 0o777, link=sys.argv[1])
        add("app/out/escaped", tarfile.REGTYPE, 0o644, b"x")
sys.stdout.buffer.write(buf.getvalue())
"##;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(outside)
        .arg(if escape { "1" } else { "0" })
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// GNU tar as root kept owners, setuid bits and device nodes from a set's
/// files archive. Now they come out without them, and an entry that would
/// land outside the target is refused with nothing swapped.
#[test]
fn files_archives_come_out_without_owners_setuid_bits_or_devices() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let c = cluster();
    let (db, p) = app(c);
    let set = backup(c, &db, &p, &[]);
    let outside = p.path("outside");
    fs::create_dir(&outside).unwrap();
    put_file(
        &set,
        "files-app.tar.gz",
        "files",
        &compress("gzip", &evil_tar(&outside, false)),
    );
    resign(&set);
    let into = p.path("restored");
    let out = restore(&p, &set, &["--files-into", into.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let shell = fs::metadata(into.join("app/rootshell")).unwrap();
    assert_eq!(shell.permissions().mode() & 0o7777, 0o755, "setuid kept");
    assert_eq!(
        fs::metadata(into.join("app/sgid")).unwrap().mode() & 0o7000,
        0
    );
    assert_eq!(shell.uid(), 0, "owned by the user restoring, here root");
    for special in ["app/null", "app/pipe"] {
        let t = fs::symlink_metadata(into.join(special)).map(|m| m.file_type());
        assert!(
            !t.as_ref().is_ok_and(|t| t.is_char_device() || t.is_fifo()),
            "{special} came out as {t:?}"
        );
    }
    assert_eq!(fs::read_to_string(into.join("app/ok.txt")).unwrap(), "fine");
    assert!(out.stderr.contains("skipped 2"), "{}", out.stderr);

    // An entry through a symlink out of the target: refused, not swapped.
    put_file(
        &set,
        "files-app.tar.gz",
        "files",
        &compress("gzip", &evil_tar(&outside, true)),
    );
    resign(&set);
    c.query(&db.name, "DELETE FROM items WHERE id > 10");
    let out = restore(
        &p,
        &set,
        &["--files-into", p.path("again").to_str().unwrap()],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        !outside.join("escaped").exists(),
        "written outside the target"
    );
    assert_eq!(
        rows(c, &db.name),
        "10",
        "swapped in although the restore failed"
    );
}

/// The globals of a set restore the roles that are missing and leave the
/// ones that exist as they are: an old set must not bring back an old
/// password or privilege (pg_dumpall's `ALTER ROLE … PASSWORD` follows
/// every `CREATE ROLE`, and used to run on live roles).
#[test]
fn restoring_globals_never_changes_an_existing_role() {
    let c = cluster();
    let (db, p) = app(c);
    let (kept, gone) = (format!("{}_kept", db.name), format!("{}_gone", db.name));
    c.query(
        "postgres",
        &format!("CREATE ROLE {kept} LOGIN PASSWORD 'old-password'"),
    );
    c.query("postgres", &format!("CREATE ROLE {gone} NOLOGIN"));
    let set = backup(c, &db, &p, &["--globals"]);
    c.query(
        "postgres",
        &format!("ALTER ROLE {kept} NOLOGIN PASSWORD 'rotated-password'"),
    );
    c.query("postgres", &format!("DROP ROLE {gone}"));
    let state = |role: &str| {
        c.query(
            "postgres",
            &format!("SELECT rolcanlogin || ' ' || coalesce(rolpassword, '') FROM pg_authid WHERE rolname = '{role}'"),
        )
    };
    let before = state(&kept);
    let out = restore(&p, &set, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        state(&kept),
        before,
        "an existing role was changed by the restore"
    );
    assert_eq!(state(&gone).len(), 1, "a missing role was not restored");
    for r in [&kept, &gone] {
        c.query("postgres", &format!("DROP ROLE {r}"));
    }
}

/// Unpacking as root by path into a directory someone else can change
/// could be redirected through a link they swap in: --files-into takes a
/// new or empty directory whose parent only root can write, and says so.
#[test]
fn files_are_unpacked_only_into_a_new_directory_nobody_else_can_change() {
    use std::os::unix::fs::PermissionsExt;
    let c = cluster();
    let (db, mut p) = app(c);
    p.add_uploads();
    let set = backup(
        c,
        &db,
        &p,
        &["--files", p.path("uploads").to_str().unwrap()],
    );
    let used = p.path("used");
    fs::create_dir(&used).unwrap();
    fs::write(used.join("keep.txt"), "mine").unwrap();
    let out = restore(&p, &set, &["--files-into", used.to_str().unwrap()]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    assert_eq!(fs::read_to_string(used.join("keep.txt")).unwrap(), "mine");
    let shared = p.path("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let out = restore(
        &p,
        &set,
        &["--files-into", shared.join("app").to_str().unwrap()],
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("writable by group or others"),
        "{}",
        out.stderr
    );
    assert!(!shared.join("app").exists());
}
