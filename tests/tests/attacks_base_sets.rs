//! A base set is data, never code, and never more than it says
//! (docs/security.md): base sets forged as an attacker with write access
//! to a backup disk or the bucket would forge them, then verified and
//! restored by the real tools. Their configuration never runs a command
//! or connects out, and a tar replaced by a bomb is stopped at the
//! manifest's size.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::forge::{self, compress, decompress, put_file};
use opskit_testkit::signing::{command, resign};
use opskit_testkit::tools::run;
use opskit_testkit::{Cluster, Output, TestDb, bin, cluster};

/// A base set of `db` in a new root (`backups`) of a directory named
/// `prefix…` beside the cluster: (the directory, the root, the set).
fn base_set(c: &Cluster, db: &TestDb, prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(c.root())
        .unwrap();
    let root = dir.path().join("backups");
    let out = run(command(bin("pgbackup"))
        .arg("--dest")
        .arg(&root)
        .args(["--physical", "--db", &db.url])
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let set = PathBuf::from(out.events("backup")[0]["path"].as_str().unwrap());
    (dir, root, set)
}

/// `walarchive restore --immediate` of `set` into `pgdata`, as the
/// server's user.
fn walarchive_restore(c: &Cluster, set: &Path, root: &Path, pgdata: &Path) -> Output {
    let mut w = command(bin("walarchive"));
    w.args(["restore", "--immediate", "--pgdata"])
        .arg(pgdata)
        .arg("--set")
        .arg(set)
        .arg("--root")
        .arg(root)
        .arg("--pg-bindir")
        .arg(c.bindir());
    run(c.as_server_user(&mut w))
}

/// Rewrite a base set's tar as an attacker would: settings that run
/// commands and connect out appended to its `postgresql.auto.conf`, a
/// `standby.signal`, and its `backup_manifest` made to agree (size and
/// manifest checksum; pg_verifybackup ignores that file's content).
fn evil_base_tar(tar: &[u8], pwned: &Path) -> Vec<u8> {
    let script = r##"
import hashlib, io, json, sys, tarfile
src = tarfile.open(fileobj=io.BytesIO(sys.stdin.buffer.read()))
pw = sys.argv[1]
evil = ("\nrecovery_end_command = 'touch %s.end'\narchive_mode = on\n"
        "archive_command = 'touch %s.archive'\nshared_preload_libraries = 'opskit_no_such_lib'\n"
        "primary_conninfo = 'host=203.0.113.1 connect_timeout=1'\nprimary_slot_name = 'production_slot'\n"
        "ssl = on\nssl_passphrase_command = 'touch %s.ssl'\n" % (pw, pw, pw)).encode()
members = [(m, src.extractfile(m).read() if m.isfile() else None) for m in src.getmembers()]
conf = dict((m.name, d) for m, d in members)["postgresql.auto.conf"] + evil
man = json.loads(dict((m.name, d) for m, d in members)["backup_manifest"])
for f in man["Files"]:
    if f["Path"] == "postgresql.auto.conf":
        f["Size"] = len(conf)
man.pop("Manifest-Checksum")
text = json.dumps(man, indent=1)[:-2] + ",\n"
text += '"Manifest-Checksum": "%s"}\n' % hashlib.sha256(text.encode()).hexdigest()
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w") as t:
    for m, d in members:
        if m.name == "postgresql.auto.conf":
            d = conf
        elif m.name == "backup_manifest":
            d = text.encode()
        if d is not None:
            m.size = len(d)
            t.addfile(m, io.BytesIO(d))
        else:
            t.addfile(m)
    s = tarfile.TarInfo("standby.signal")
    t.addfile(s, io.BytesIO(b""))
sys.stdout.buffer.write(out.getvalue())
"##;
    forge::pipe(Command::new("python3").args(["-c", script]).arg(pwned), tar)
}

/// A base set's own configuration is never used by a cluster opskit starts
/// from it: verify-backup --replay and walarchive restore (restore-pitr.sh)
/// force every command-running, library-loading and connecting setting on
/// the command line and remove standby.signal. The scratch cluster used to
/// run a forged recovery_end_command as postgres.
#[test]
fn a_base_sets_configuration_never_runs_commands_or_connects_out() {
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE t AS SELECT g FROM generate_series(1, 500) g",
    );
    let (dir, root, set) = base_set(c, &db, "opskit-attack-");
    let pwned = PathBuf::from(format!("/tmp/opskit-pwned-{}", std::process::id()));
    let tar = decompress("zstd", &fs::read(set.join("base.tar.zst")).unwrap());
    put_file(
        &set,
        "base.tar.zst",
        "base",
        &compress("zstd", &evil_base_tar(&tar, &pwned)),
    );
    resign(&set);
    c.give(dir.path());
    let gone = |what: &str| {
        for x in ["end", "archive", "ssl"] {
            let p = PathBuf::from(format!("{}.{x}", pwned.display()));
            assert!(!p.exists(), "{what}: the set's {x} command ran");
        }
    };

    let mut v = command(bin("verify-backup"));
    v.args(["--replay", "--scratch"])
        .arg(dir.path())
        .arg("--pg-bindir")
        .arg(c.bindir())
        .arg(&set);
    let out = run(c.as_server_user(&mut v));
    gone("verify-backup --replay");
    assert_eq!(out.code, 0, "{}", out.stdout);
    let replay = out
        .stdout
        .lines()
        .find(|l| l.contains("\"replay\""))
        .unwrap()
        .to_string();
    assert!(
        replay.contains("recovery_end_command") && replay.contains("primary_conninfo"),
        "{replay}"
    );

    let pgdata = dir.path().join("recovered");
    let out = walarchive_restore(c, &set, &root, &pgdata);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rec = &out.events("recovery")[0];
    for k in [
        "recovery_end_command",
        "archive_command",
        "primary_conninfo",
        "primary_slot_name",
        "shared_preload_libraries",
        "ssl_passphrase_command",
    ] {
        assert_eq!(rec["overrides"][k], "", "{k}: {rec}");
    }
    assert!(!pgdata.join("standby.signal").exists());
    // Started as restore-pitr.sh starts it: the record's options, a port
    // and a socket of its own.
    let opts = format!(
        "{} -c port=5439 -c unix_socket_directories='{}'",
        rec["start_options"].as_str().unwrap(),
        pgdata.display()
    );
    let pg_ctl = |args: &[&str]| {
        let mut cmd = Command::new(c.bindir().join("pg_ctl"));
        cmd.arg("-D").arg(&pgdata).args(args);
        run(c.as_server_user(&mut cmd))
    };
    let log = dir.path().join("recovered.log");
    let started = pg_ctl(&[
        "-l",
        log.to_str().unwrap(),
        "-w",
        "-t",
        "120",
        "-o",
        &opts,
        "start",
    ]);
    let mut promoted = false;
    for _ in 0..600 {
        let mut q = Command::new(c.bindir().join("psql"));
        q.args(["-XAtq", "-p", "5439", "-h"])
            .arg(&pgdata)
            .args(["-U", rec["superuser"].as_str().unwrap()])
            .args(["-d", "postgres", "-c", "SELECT pg_is_in_recovery()"]);
        if run(c.as_server_user(&mut q)).stdout.trim() == "f" {
            promoted = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    pg_ctl(&["stop", "-m", "fast", "-w"]);
    gone("the recovered cluster");
    assert_eq!(
        started.code,
        0,
        "{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(promoted, "{}", fs::read_to_string(&log).unwrap_or_default());
}

/// A base set's tar replaced, where the set lies (a backup disk, a
/// bucket), by a small zstd stream of a far larger tar: the manifest and
/// its signature untouched, the file's size the manifest's. A restore
/// stops at the content's size the manifest gives; it used to unpack all
/// of it (here 4x, in production until the disk beside the data
/// directory was full) and only then find the sha256 wrong.
#[test]
fn a_base_tar_replaced_by_a_bomb_is_stopped_at_the_manifests_size() {
    let c = cluster();
    let db = c.create_db();
    let (dir, root, set) = base_set(c, &db, "opskit-bomb-");
    let m = forge::manifest(&set);
    let base = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "base.tar.zst")
        .unwrap();
    let (bytes, content) = (
        base["bytes"].as_u64().unwrap(),
        base["content_bytes"].as_u64().unwrap(),
    );
    // One file of 4x the content, in zeros, then a skippable frame to make
    // the file the manifest's size.
    let script = format!(
        "import sys, tarfile\nclass Z:\n    def read(self, n): return bytes(n)\n\
         t = tarfile.open(fileobj=sys.stdout.buffer, mode='w|')\n\
         i = tarfile.TarInfo('base/1/bomb'); i.size = {}\nt.addfile(i, Z()); t.close()\n",
        content * 4
    );
    let mut bomb = forge::pipe(
        Command::new("bash").args(["-c", "python3 -c \"$1\" | zstd -q -c", "_", &script]),
        b"",
    );
    assert!((bomb.len() as u64) + 8 <= bytes, "{} {bytes}", bomb.len());
    let pad = bytes - bomb.len() as u64 - 8;
    bomb.extend_from_slice(&0x184D_2A50u32.to_le_bytes());
    bomb.extend_from_slice(&(pad as u32).to_le_bytes());
    bomb.resize(bytes as usize, 0);
    fs::write(set.join("base.tar.zst"), &bomb).unwrap();
    c.give(dir.path());

    let pgdata = dir.path().join("recovered");
    let out = walarchive_restore(c, &set, &root, &pgdata);
    assert_ne!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("base.tar.zst")
            && out
                .stderr
                .contains(&format!("more than the {content} bytes")),
        "{}",
        out.stderr
    );
    assert!(!pgdata.exists(), "left behind");
}
