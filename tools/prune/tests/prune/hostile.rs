//! prune against hostile or broken input: endless garbage on stdin, corrupt
//! manifests, planted symlinks, a torn result log. Nothing good is lost and
//! nothing outside the root is touched.

use super::*;

#[test]
fn endless_garbage_on_stdin_is_refused_in_one_line_deleting_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    ten_days(&root);
    // 400 MB of address space, a minute: holding all of stdin aborted.
    let script = "ulimit -v 400000; yes garbage | exec timeout 60 \"$0\" \"$1\" --keep-last 1";
    let out = run(Command::new("sh")
        .args(["-c", script])
        .arg(env!("CARGO_BIN_EXE_prune"))
        .arg(&root)
        .env_remove("OPSKIT_LOG"));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("stdin: more than 100000 lines: refused"),
        "{}",
        out.stderr
    );
    let sets = || sets_left(&root);
    assert_eq!(sets(), 10);

    // Fewer bad lines than the bound: each an error record, a few on
    // stderr and one line for the rest; deletion held.
    let good = verify_line(&root, "app-20261123T030000Z", true);
    let out = with_stdin(
        prune(&root).args(["--keep-last", "1"]),
        &format!("{good}\n{}", "garbage\n".repeat(50)),
    );
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert_eq!(out.events("error").len(), 50);
    assert!(
        out.stderr
            .contains("stdin: … and 45 more lines that are not records"),
        "{}",
        out.stderr
    );
    assert_eq!(out.stderr.lines().count(), 7, "{}", out.stderr);
    assert_eq!(sets(), 10);
}

/// The issue's reproduction: three verified sets, the newest one's
/// MANIFEST.json then broken (ten ways), `prune ROOT --keep-last 1`. The
/// broken set takes no slot and is not "the newest verified": the newest
/// good set stays, and only what the policy gives up goes.
#[test]
fn a_corrupt_manifest_never_costs_a_good_set() {
    type Break = fn(&Path);
    let cases: [(&str, Break); 10] = [
        ("truncated", |m| {
            let t = fs::read(m).unwrap();
            fs::write(m, &t[..100.min(t.len() / 2)]).unwrap();
        }),
        ("empty", |m| fs::write(m, "").unwrap()),
        ("an empty object", |m| fs::write(m, "{}").unwrap()),
        ("not JSON", |m| fs::write(m, "{oops").unwrap()),
        ("another format", |m| {
            let t = fs::read_to_string(m).unwrap();
            fs::write(m, t.replace("opskit-set/1", "other/9")).unwrap();
        }),
        ("a file outside the set", |m| {
            let t = fs::read_to_string(m).unwrap();
            let bad = r#""files":[{"name":"../x","kind":"files","bytes":1,"sha256":"00"}]"#;
            fs::write(m, t.replace(r#""files":[]"#, bad)).unwrap();
        }),
        ("a FIFO", |m| {
            fs::remove_file(m).unwrap();
            assert!(Command::new("mkfifo").arg(m).status().unwrap().success());
        }),
        ("a directory", |m| {
            fs::remove_file(m).unwrap();
            fs::create_dir(m).unwrap();
        }),
        ("a symlink", |m| {
            fs::remove_file(m).unwrap();
            std::os::unix::fs::symlink("/etc/hostname", m).unwrap();
        }),
        ("binary", |m| fs::write(m, [0xffu8, 0xfe, 0, 1]).unwrap()),
    ];
    for (what, damage) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let names = [
            "app-20261121T030000Z",
            "app-20261122T030000Z",
            "app-20261123T030000Z",
        ];
        let log: Vec<String> = names
            .iter()
            .map(|n| {
                set(&root, n);
                verify_line(&root, n, true)
            })
            .collect();
        fs::write(root.join("verified.ndjson"), log.join("\n") + "\n").unwrap();
        damage(&root.join(names[2]).join("MANIFEST.json"));
        let out = run(prune(&root)
            .arg("--keep-last")
            .arg("1")
            .stdin(std::process::Stdio::null()));
        assert_eq!(
            action_of(&out, names[2]),
            "corrupt",
            "{what}: {}",
            out.stdout
        );
        assert_eq!(action_of(&out, names[1]), "keep", "{what}: {}", out.stdout);
        assert!(
            root.join(names[1]).is_dir(),
            "{what}: the newest good set was deleted"
        );
        assert!(root.join(names[2]).is_dir(), "{what}");
        assert_eq!(out.code, 1, "{what}: a damaged set is a failed check");
    }
}

/// A timeline directory of the WAL archive planted as a symlink (the root
/// may belong to postgres) is not followed: nothing outside is deleted.
#[test]
fn wal_pruning_never_follows_a_symlinked_timeline_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("backups");
    fs::create_dir(&root).unwrap();
    let name = "app-base-20261123T030000Z";
    let d = root.join(name);
    fs::create_dir(&d).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&opskit_testkit::tools::minimal_manifest(name)).unwrap();
    m["files"] =
        serde_json::json!([{"name": "base.tar.zst", "kind": "base", "bytes": 1, "sha256": "00"}]);
    m["physical"] = serde_json::json!({
        "server": "s", "server_version": "15", "server_version_num": 150000,
        "pg_basebackup_version": "15", "system_identifier": "1", "superuser": "postgres",
        "timeline": 1, "start_lsn": "0/10000028", "end_lsn": "0/10000100",
        "start_wal": "000000010000000000000010", "wal_segment_size": 16777216,
        "file": "base.tar.zst"
    });
    fs::write(d.join("MANIFEST.json"), m.to_string()).unwrap();
    fs::write(d.join("base.tar.zst"), "x").unwrap();
    let outside = tmp.path().join("elsewhere");
    fs::create_dir(&outside).unwrap();
    for f in [
        "000000010000000000000001.sha256",
        "000000010000000000000001.zst",
    ] {
        fs::write(outside.join(f), "keep me").unwrap();
    }
    fs::create_dir(root.join("wal")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("wal/00000001")).unwrap();
    let out = run(prune(&root)
        .args(["--keep-last", "1"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    for f in [
        "000000010000000000000001.sha256",
        "000000010000000000000001.zst",
    ] {
        assert!(outside.join(f).exists(), "{f} outside the root was deleted");
    }
}

/// The lock in a root another user can write (postgres) planted as a
/// symlink to a root-owned file: prune refuses in one line and the file is
/// not overwritten with its "pid=" stamp.
#[test]
fn a_planted_lock_symlink_is_not_written_through() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("backups");
    fs::create_dir(&root).unwrap();
    ten_days(&root);
    let victim = tmp.path().join("shadow");
    fs::write(&victim, "root:secret\n").unwrap();
    std::os::unix::fs::symlink(&victim, root.join(".opskit.lock")).unwrap();
    let out = run(prune(&root)
        .args(["--keep-last", "1"])
        .stdin(std::process::Stdio::null()));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("symbolic link"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert_eq!(fs::read_to_string(&victim).unwrap(), "root:secret\n");
    assert_eq!(names(&root).len(), 11, "nothing deleted");
}

#[test]
fn an_unreadable_line_of_the_result_log_holds_deletion_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap();
    ten_days(&root);
    // The second line, torn by a crash, may have been the 23rd failing.
    let log = [
        verify_line(&root, "app-20261123T030000Z", true),
        r#"{"event":"verify","tool":"verify-backup","ok":fa"#.to_string(),
    ]
    .join("\n");
    fs::write(root.join("verified.ndjson"), log + "\n").unwrap();
    let out = run(prune(&root).args(["--keep-last", "1", "--min-keep", "0"]));
    assert_eq!(out.code, 2, "{}", out.stderr);
    let err = &out.events("error")[0];
    assert_eq!(err["line"], 2, "{err}");
    assert!(
        err["source"]
            .as_str()
            .is_some_and(|f| f.ends_with("verified.ndjson")),
        "{err}"
    );
    assert_eq!(
        out.summary()["held"],
        "some verification records could not be read"
    );
    assert_eq!(sets_left(&root), 10, "nothing deleted");

    // An explicit --verified that does not exist is an error, not "no verdicts".
    let missing = [
        "--keep-last",
        "1",
        "--verified",
        "/nonexistent/verified.ndjson",
    ];
    let out = run(prune(&root).args(missing));
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("/nonexistent/verified.ndjson"),
        "{}",
        out.stderr
    );
}
