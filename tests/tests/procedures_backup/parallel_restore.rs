//! Parallel restores of dump sets (`--jobs N`): the copy of the dump in
//! scratch space, refused or streamed instead when it has no room or
//! cannot be written, and what kill -9 leaves and the next run removes.

use super::*;

/// A restore with --jobs 2 reads a copy of the dump: on a scratch disk too
/// small for it, restore-system.sh is refused before anything is written,
/// naming the space needed; nothing is swapped and no new database is
/// left. --jobs 1 streams the dump and needs no copy; so does the default
/// (the machine's cores) when the copy does not fit, saying so.
#[test]
fn a_parallel_restore_needs_room_for_its_copy() {
    if !opskit_testkit::sh::is_root() {
        eprintln!("not root: no small file system to restore with");
        return;
    }
    let c = cluster();
    let db = app_db(c);
    let mut p = Procs::new(c, &db.name);
    run(&mut p.script("backup-system.sh")).ok();
    let original = dump(c, &db.name, &[]);
    let small = p.path("small");
    std::fs::create_dir_all(&small).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4k,mode=0755", "opskit-small"])
        .arg(&small)
        .status()
        .unwrap();
    assert!(st.success(), "mounting a 4 KiB tmpfs");
    p.set("OPSKIT_SCRATCH_DIR", small.to_str().unwrap());
    let refused = run(p
        .script("restore-system.sh")
        .args(["--yes", "--no-health", "--jobs", "2"]));
    let streamed = run(p
        .script("restore-system.sh")
        .args(["--yes", "--no-health", "--jobs", "1"]));
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let by_default = run(p
        .script("restore-system.sh")
        .env_remove("OPSKIT_RESTORE_JOBS")
        .args(["--yes", "--no-health"]));
    let left: Vec<_> = std::fs::read_dir(&small).unwrap().flatten().collect();
    let _ = Command::new("umount").arg(&small).status();
    assert_eq!(refused.code, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--jobs 2")
            && refused.stderr.contains("needs")
            && refused.stderr.contains("nothing was restored"),
        "{}",
        refused.stderr
    );
    streamed.ok();
    by_default.ok();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(
            by_default.stderr.contains("needs")
                && by_default
                    .stderr
                    .contains("streaming it with one job instead"),
            "{}",
            by_default.stderr
        );
    }
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(dump(c, &db.name, &[]), original, "restored data differs");
    // The refused run made no database; each of the other two swapped its
    // own in and kept the one before aside.
    let made = c.databases_starting_with(&format!("{}_", db.name));
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(made.iter().all(|m| m.contains("_before_")), "{made:?}");
}

/// The copy of a parallel restore that cannot be written part way, after
/// the room check passed (a file size limit stands in for a disk another
/// writer fills meanwhile): asked for `--jobs 2`, the restore fails naming
/// the write, restores nothing and leaves no copy; by default it streams
/// the dump instead and says why.
#[test]
fn a_parallel_restore_whose_copy_fails_part_way() {
    let c = cluster();
    let db = c.create_db();
    c.query(
        &db.name,
        "CREATE TABLE t AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g",
    );
    let tmp = tempfile::tempdir().unwrap();
    let out = run(opskit_testkit::signing::command(bin("pgbackup"))
        .arg("--dest")
        .arg(tmp.path())
        .args(["--db", &db.url])
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let set = out.records()[0]["path"].as_str().unwrap().to_string();
    let scratch = tmp.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    // Writes past 64 KiB fail (EFBIG) rather than kill: SIGXFSZ ignored.
    let limited = |jobs: &[&str]| {
        run(opskit_testkit::signing::command("bash")
            .env_remove("OPSKIT_RESTORE_JOBS")
            .env_remove("OPSKIT_LOG")
            .args(["-c", "trap '' XFSZ; ulimit -f 64; exec \"$@\"", "bash"])
            .arg(bin("verify-backup"))
            .arg("--scratch")
            .arg(&scratch)
            .arg("--pg-bindir")
            .arg(c.bindir())
            .args(["--restore-into", &c.url("postgres")])
            .args(jobs)
            .arg(&set))
    };
    let asked = limited(&["--jobs", "2"]);
    assert_ne!(asked.code, 0, "{}", asked.stderr);
    assert!(
        asked.stderr.contains("writing ") && asked.stderr.contains("File too large"),
        "{}",
        asked.stderr
    );
    assert!(asked.events("verify").iter().all(|v| v["ok"] != true));
    let by_default = limited(&[]);
    assert_eq!(by_default.code, 0, "{}", by_default.stderr);
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(
            by_default.stderr.contains("File too large")
                && by_default
                    .stderr
                    .contains("streaming the dump with one job instead"),
            "{}",
            by_default.stderr
        );
    }
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "{left:?}");
}

/// kill -9 during a parallel restore: its copy of the dump is left and
/// the half-restored database is the scratch one (the live database is
/// untouched); the next run removes the copy, says so, and restores.
#[test]
fn a_parallel_restore_killed_mid_way() {
    let c = cluster();
    let db = c.create_db();
    c.client(&db.name)
        .batch_execute(
            "CREATE TABLE events AS SELECT g AS id, md5(g::text) AS k, repeat(md5(g::text), 6) AS pad \
             FROM generate_series(1, 300000) g; \
             ALTER TABLE events ADD PRIMARY KEY (id); \
             CREATE INDEX ON events (k); CREATE INDEX ON events (pad)",
        )
        .unwrap();
    let p = Procs::new(c, &db.name);
    run(&mut p.script("backup-system.sh")).ok();
    let set = p.root().join(&p.sets()[0]);
    let scratch = p.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let verify = || {
        let mut cmd = opskit_testkit::signing::command(bin("verify-backup"));
        cmd.env_remove("OPSKIT_LOG")
            .args(["--restore-into", &c.url("postgres"), "--jobs", "2"])
            .arg("--scratch")
            .arg(&scratch)
            .arg(&set);
        cmd
    };
    let mut child = verify()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let copies = || -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&scratch)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".opskit-restore-")
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let pg_restore = loop {
        let out = Command::new("pgrep")
            .args(["-P", &pid.to_string(), "pg_restore"])
            .output()
            .unwrap();
        let found = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !found.is_empty() && !copies().is_empty() {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "pg_restore never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    child.kill().unwrap();
    child.wait().unwrap();
    // pg_restore goes with it (SIGTERM on its parent's death), rather than
    // load a database nobody checks from a copy nobody removes.
    let alive = || std::path::Path::new(&format!("/proc/{pg_restore}")).exists();
    let gone_by = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while alive() && std::time::Instant::now() < gone_by {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let outlived = alive();
    let _ = Command::new("pkill")
        .args(["-KILL", "-P", &pg_restore])
        .status();
    let _ = Command::new("kill").args(["-KILL", &pg_restore]).status();
    assert!(
        !outlived,
        "pg_restore outlived the verify-backup that ran it"
    );
    assert_eq!(copies().len(), 1, "the killed run's copy is left");
    assert_eq!(
        c.query(&db.name, "SELECT count(*) FROM events"),
        ["300000"],
        "the live database is untouched"
    );
    let half = c.databases_starting_with(&format!("opskit_verify_{pid}_"));
    assert_eq!(half.len(), 1, "the half-restored database: {half:?}");
    c.client("postgres")
        .batch_execute(&format!("DROP DATABASE \"{}\" WITH (FORCE)", half[0]))
        .unwrap();

    let out = run(&mut verify());
    out.ok();
    assert!(
        out.stderr
            .contains("the restore copy of an interrupted run"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    let restore = out.check("restore");
    assert!(
        restore["detail"].as_str().unwrap().contains("--jobs 2"),
        "{restore}"
    );

    // A scratch directory others can write (and not sticky) could have the
    // copy swapped under pg_restore: refused, nothing restored.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run(&mut verify());
    assert_eq!(out.code, 64, "{}", out.stderr);
    assert!(out.stderr.contains("not sticky"), "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    // Not asked for (the default jobs), the same directory means
    // streaming: restored, nothing written there.
    let mut by_default = opskit_testkit::signing::command(bin("verify-backup"));
    by_default
        .env_remove("OPSKIT_LOG")
        .env_remove("OPSKIT_RESTORE_JOBS")
        .args(["--restore-into", &c.url("postgres")])
        .arg("--scratch")
        .arg(&scratch)
        .arg(&set);
    let out = run(&mut by_default);
    assert_eq!(out.code, 0, "{}", out.stderr);
    if std::thread::available_parallelism().map_or(1, |n| n.get()) > 1 {
        assert!(
            out.stderr.contains("not sticky") && out.stderr.contains("streaming it with one job"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
}
