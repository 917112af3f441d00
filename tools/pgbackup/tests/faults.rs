//! Faults: the database going away mid-dump, a SIGKILL, a full disk, an
//! unreachable server, a concurrent run, bad input, and the password never
//! showing anywhere.

mod common;

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use opskit_testkit::cluster;
use opskit_testkit::tools::{output_of, run};

#[test]
fn database_restarted_mid_dump_leaves_no_set() {
    let c = cluster();
    let db = c.create_db_alone();
    fill(c, &db, 300_000);
    let dest = tempfile::tempdir().unwrap();
    let child = pgbackup(c, &db, dest.path())
        .args(["--compress", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Once data is streaming, freeze pgbackup so pg_dump is stuck mid-COPY,
    // restart the server under it, and let it go on.
    wait_for(60, "dump output", || staged_dump_bytes(dest.path()) > 0);
    signal(pid, "STOP");
    c.restart();
    signal(pid, "CONT");
    let out = output_of(child);
    assert_eq!(
        out.code, 2,
        "stdout: {}\nstderr: {}",
        out.stdout, out.stderr
    );
    let err = &out.events("error")[0];
    let msg = err["message"].as_str().unwrap();
    assert!(msg.starts_with("pg_dump failed"), "{msg}");
    assert!(msg.contains("big"), "names the table being dumped: {msg}");
    assert_eq!(out.summary()["ok"], false);
    assert!(sets(dest.path()).is_empty(), "{:?}", names(dest.path()));
    assert!(temps(dest.path()).is_empty(), "{:?}", names(dest.path()));
}

#[test]
fn sigkill_mid_dump_leaves_a_recognised_leftover_that_the_next_run_removes() {
    let c = cluster();
    let db = c.create_db();
    fill(c, &db, 300_000);
    let dest = tempfile::tempdir().unwrap();
    let mut child = pgbackup(c, &db, dest.path())
        .args(["--compress", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(60, "dump output", || staged_dump_bytes(dest.path()) > 0);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(sets(dest.path()).is_empty(), "{:?}", names(dest.path()));
    let left = temps(dest.path());
    assert_eq!(left.len(), 1, "{:?}", names(dest.path()));
    // Never mistaken for a set: hidden, no manifest, a temp name.
    assert!(left[0].starts_with('.'));
    assert!(!dest.path().join(&left[0]).join("MANIFEST.json").exists());

    let out = run(&mut pgbackup(c, &db, dest.path()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("left by an interrupted run"),
        "{}",
        out.stderr
    );
    assert!(temps(dest.path()).is_empty(), "{:?}", names(dest.path()));
    assert_eq!(sets(dest.path()).len(), 1);
}

#[test]
fn full_disk_fails_cleanly() {
    let c = cluster();
    let db = c.create_db();
    fill(c, &db, 100_000);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("small");
    fs::create_dir(&dest).unwrap();
    // A real full filesystem when we may mount one; else a file size limit.
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&dest)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let out = if mounted {
        run(&mut pgbackup(c, &db, &dest))
    } else {
        let cmd = pgbackup(c, &db, &dest);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect();
        run(Command::new("bash").arg("-c").arg(format!(
            "ulimit -f 1024; exec '{}' {}",
            cmd.get_program().to_string_lossy(),
            args.join(" ")
        )))
    };
    let leftover = names(&dest);
    if mounted {
        Command::new("umount").arg(&dest).status().unwrap();
    }
    assert_eq!(out.code, 2, "{}", out.stderr);
    let msg = out.events("error")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    let want = if mounted {
        "no space left on "
    } else {
        "file size limit exceeded on "
    };
    assert!(msg.starts_with(want), "{msg}");
    assert!(msg.contains(&dest.display().to_string()), "{msg}");
    assert_eq!(
        leftover,
        vec![".opskit.lock"],
        "only the lock file may remain"
    );
}

#[test]
fn unreachable_server_fails_fast_naming_host_not_password() {
    let c = cluster();
    let dest = tempfile::tempdir().unwrap();
    // A closed port: refused at once.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgresql://opskit:hunter2secret@127.0.0.1:{closed}/app");
    let out = run(
        opskit_testkit::signing::command(env!("CARGO_BIN_EXE_pgbackup")).args([
            "--dest",
            dest.path().to_str().unwrap(),
            "--db",
            &url,
        ]),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    let msg = out.events("error")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.contains(&format!("127.0.0.1:{closed}")), "{msg}");
    assert!(!out.stdout.contains("hunter2secret") && !out.stderr.contains("hunter2secret"));

    // A server that accepts and never answers: the connect timeout holds.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("postgresql://opskit:hunter2secret@127.0.0.1:{port}/app?connect_timeout=2");
    let start = Instant::now();
    let out = run(
        opskit_testkit::signing::command(env!("CARGO_BIN_EXE_pgbackup")).args([
            "--dest",
            dest.path().to_str().unwrap(),
            "--db",
            &url,
        ]),
    );
    let took = start.elapsed();
    drop(silent);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{}",
        out.stderr
    );
    assert!(!out.stdout.contains("hunter2secret") && !out.stderr.contains("hunter2secret"));
    assert!(sets(dest.path()).is_empty());
    let _ = c;
}

#[test]
fn bad_input_is_a_one_line_usage_error() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--dest", d, "--db", "mysql://u:hunter2@h/d"],
            "not PostgreSQL",
        ),
        (
            vec!["--dest", d, "--db", "postgres://u:hunter2@h:99999/d"],
            "invalid port",
        ),
        (vec!["--dest", d, "--name", "../etc"], "invalid --name"),
        (
            vec!["--dest", d, "--files", "/nonexistent/dir"],
            "not a directory",
        ),
        (vec!["--dest", d, "--compress", "12"], "12"),
        (
            vec!["--dest", d, "--lock-wait", "5x"],
            "invalid duration '5x'",
        ),
        (vec!["--dest", d, "--exclude", "a["], "invalid --exclude"),
        (vec!["--bogus"], "--bogus"),
        (vec![], "--dest"),
    ];
    for (args, want) in cases {
        let out = run(
            opskit_testkit::signing::command(env!("CARGO_BIN_EXE_pgbackup"))
                .args(&args)
                .env_remove("OPSKIT_BACKUP_ROOT"),
        );
        assert_eq!(out.code, 64, "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{args:?}: {}", out.stderr);
        assert!(!out.stderr.contains("hunter2"), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn concurrent_run_fails_at_once_or_waits() {
    let c = cluster();
    let db = c.create_db();
    let dest = tempfile::tempdir().unwrap();
    let held = opskit::lock::acquire(&dest.path().join(".opskit.lock"), Duration::ZERO).unwrap();
    let start = Instant::now();
    let out = run(&mut pgbackup(c, &db, dest.path()));
    assert_eq!(out.code, 2);
    assert!(start.elapsed() < Duration::from_secs(5));
    let msg = out.events("error")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(msg.starts_with("another run holds "), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id())),
        "{msg}"
    );

    // With --lock-wait it gets the lock once the holder lets go.
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(800));
        drop(held);
    });
    let out = run(pgbackup(c, &db, dest.path()).args(["--lock-wait", "30s"]));
    releaser.join().unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);

    // Two real runs at once: one set each or a clean refusal, never a mix.
    let a = pgbackup(c, &db, dest.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = pgbackup(c, &db, dest.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (output_of(a), output_of(b));
    for o in [&a, &b] {
        assert!(
            o.code == 0 || (o.code == 2 && o.stdout.contains("another run holds")),
            "{o:?}"
        );
    }
    assert!(a.code == 0 || b.code == 0);
    for s in sets(dest.path()) {
        let sums = run(Command::new("sha256sum")
            .arg("-c")
            .arg("SHA256SUMS")
            .current_dir(&s));
        assert_eq!(sums.code, 0, "{}", sums.stdout);
    }
    assert!(temps(dest.path()).is_empty());
}

#[test]
fn password_appears_nowhere() {
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE locked (id int); INSERT INTO locked VALUES (1)",
    );
    let dest = tempfile::tempdir().unwrap();
    // Hold a lock that pg_dump must wait for, so its process can be read.
    let mut holder = c.client(&db.name);
    let mut tx = holder.transaction().unwrap();
    tx.batch_execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let child = pgbackup(c, &db, dest.path())
        .args(["--globals", "--row-counts", "-v"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    // The dumping pg_dump, not the `pg_dump --version` probe before it
    // (which may already have exited: a zombie's cmdline is empty).
    let mut cmdline = String::new();
    wait_for(30, "the dumping pg_dump child", || {
        children_named(pid, "pg_dump").into_iter().any(|p| {
            let mut s = String::new();
            let read = fs::File::open(format!("/proc/{p}/cmdline"))
                .and_then(|mut f| f.read_to_string(&mut s));
            let dumping = read.is_ok() && s.contains("--format");
            if dumping {
                cmdline = s;
            }
            dumping
        })
    });
    let mut own_cmdline = String::new();
    fs::File::open(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .read_to_string(&mut own_cmdline)
        .unwrap();
    tx.rollback().unwrap();
    let out = output_of(child);
    assert_eq!(out.code, 0, "{}", out.stderr);

    let pw = c.password();
    assert!(cmdline.contains("pg_dump"), "{cmdline:?}");
    assert!(
        !cmdline.contains(pw),
        "pg_dump argv holds the password: {cmdline:?}"
    );
    assert!(!out.stdout.contains(pw), "{}", out.stdout);
    assert!(!out.stderr.contains(pw), "{}", out.stderr);
    let enc = percent_encode(pw);
    assert!(!out.stderr.contains(&enc) && !out.stdout.contains(&enc));
    for s in sets(dest.path()) {
        let m = fs::read_to_string(s.join("MANIFEST.json")).unwrap();
        assert!(!m.contains(pw) && !m.contains(&enc), "{m}");
    }
    // Our own argv has it only because this test passed --db with it; the
    // child's argv must not, which is what was checked above.
    assert!(own_cmdline.contains("--db"));
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn an_unreadable_file_fails_the_backup_unless_skipped() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    // Root reads everything: run pgbackup as nobody to meet an unreadable file.
    let is_root = fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let nobody = fs::read_to_string("/etc/passwd").ok().and_then(|p| {
        p.lines()
            .find(|l| l.starts_with("nobody:"))
            .map(|l| l.split(':').nth(2).unwrap().parse::<u32>().unwrap())
    });
    let c = cluster();
    let db = c.create_db();
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let app = tmp.path().join("app");
    fs::create_dir(&app).unwrap();
    fs::write(app.join("readable.txt"), "ok").unwrap();
    fs::write(app.join("secret.key"), "no").unwrap();
    fs::set_permissions(app.join("readable.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(app.join("secret.key"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(&app, fs::Permissions::from_mode(0o755)).unwrap();
    let dest = tmp.path().join("dest");
    fs::create_dir(&dest).unwrap();
    fs::set_permissions(&dest, fs::Permissions::from_mode(0o777)).unwrap();
    let as_unprivileged = |cmd: &mut Command| {
        if let (true, Some(uid)) = (is_root, nobody) {
            // The test's signing key is root's: this run signs nothing.
            cmd.uid(uid)
                .gid(65534)
                .env("HOME", "/")
                .env_remove("OPSKIT_SIGNING_KEY");
        }
    };
    let mut cmd = pgbackup(c, &db, &dest);
    cmd.arg("--files").arg(&app);
    as_unprivileged(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.code, 2, "{}", out.stderr);
    let msg = out.events("error")[0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("secret.key") && msg.contains("--skip-unreadable"),
        "{msg}"
    );
    assert!(
        sets(&dest).is_empty() && temps(&dest).is_empty(),
        "{:?}",
        names(&dest)
    );

    let mut cmd = pgbackup(c, &db, &dest);
    cmd.arg("--files").arg(&app).arg("--skip-unreadable");
    as_unprivileged(&mut cmd);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("skipping unreadable"), "{}", out.stderr);
    let set = sets(&dest).pop().unwrap();
    let m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap();
    let files = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "files")
        .unwrap()
        .clone();
    assert_eq!(
        files["entries"], 2,
        "the directory and the readable file: {files}"
    );
    assert!(
        files["skipped"][0]
            .as_str()
            .unwrap()
            .ends_with("secret.key (unreadable)"),
        "{files}"
    );
}
