//! Progress of long runs on stderr: lines for the journal, a bar on a
//! terminal, nothing for a short run or under `-q`; stdout unchanged.

use std::process::Command;

use opskit_testkit::signing::command;
use opskit_testkit::tools::{Output, run};
use opskit_testkit::{bin, cluster};

/// Lines of `err` that are progress of `what`.
fn lines<'a>(err: &'a str, what: &str) -> Vec<&'a str> {
    err.lines().filter(|l| l.contains(what)).collect()
}

/// Off a terminal (systemd's journal) a long run logs where it is, with
/// the share done and the time left when the manifest knows the total,
/// and what it came to at the end; a run shorter than the interval (30 s
/// by default) and a run under -q say nothing of it. Records on stdout
/// are the same whatever stderr shows.
#[test]
fn long_runs_log_their_progress() {
    let c = cluster();
    let db = c.create_db();
    c.client(&db.name)
        .batch_execute(
            "CREATE TABLE t AS SELECT g, md5(g::text) AS k, repeat(md5(g::text), 4) AS pad \
             FROM generate_series(1, 200000) g",
        )
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let backup = |every: Option<&str>, extra: &[&str]| -> Output {
        let mut cmd = command(bin("pgbackup"));
        cmd.env_remove("OPSKIT_LOG")
            .env_remove("OPSKIT_PROGRESS_EVERY")
            .arg("--dest")
            .arg(tmp.path())
            .args(["--db", &db.url, "--compress", "gzip"])
            .arg("--pg-bindir")
            .arg(c.bindir())
            .args(extra);
        if let Some(e) = every {
            cmd.env("OPSKIT_PROGRESS_EVERY", e);
        }
        let out = run(&mut cmd);
        assert_eq!(out.code, 0, "{}", out.stderr);
        out
    };
    let out = backup(Some("1ms"), &[]);
    let shown = lines(&out.stderr, "pgbackup: writing ");
    assert!(
        shown
            .iter()
            .any(|l| l.contains(" so far, ") && l.contains("/s, ")),
        "no progress line: {}",
        out.stderr
    );
    assert!(
        shown.last().unwrap().contains(" in "),
        "no closing line: {shown:?}"
    );
    let set = out.records()[0]["path"].as_str().unwrap().to_string();
    let quiet = backup(None, &[]);
    assert!(
        lines(&quiet.stderr, "writing").is_empty(),
        "{}",
        quiet.stderr
    );
    let q = backup(Some("1ms"), &["-q"]);
    assert!(q.stderr.is_empty(), "-q: {}", q.stderr);
    let events = |o: &Output| -> Vec<String> {
        o.records()
            .iter()
            .map(|r| r["event"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(events(&out), events(&quiet), "stdout changed");

    let verify = |every: &str| {
        let mut cmd = command(bin("verify-backup"));
        cmd.env_remove("OPSKIT_LOG")
            .env("OPSKIT_PROGRESS_EVERY", every)
            .arg(&set);
        run(&mut cmd)
    };
    let out = verify("1ms");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let name = std::path::Path::new(&set)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let shown = lines(&out.stderr, &format!("verify-backup: verifying {name}: "));
    assert!(
        shown
            .iter()
            .any(|l| l.contains(" of ") && l.contains("%), ") && l.contains(", about ")),
        "no line with the share and time left: {}",
        out.stderr
    );
    let off = verify("0");
    assert!(lines(&off.stderr, "verifying").is_empty(), "{}", off.stderr);
    assert_eq!(out.stdout.lines().count(), off.stdout.lines().count());

    // A parallel restore: the copy is read and written, then pg_restore
    // --jobs runs with nothing to count but its time.
    let mut cmd = command(bin("verify-backup"));
    cmd.env_remove("OPSKIT_LOG")
        .env("OPSKIT_PROGRESS_EVERY", "1ms")
        .args(["--restore-into", &c.url("postgres"), "--jobs", "2", &set]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.lines().any(|l| {
            l.starts_with("verify-backup: pg_restore --jobs 2 into ") && l.ends_with(" running")
        }),
        "no line of pg_restore's time: {}",
        out.stderr
    );
}

/// A set (in `dest`) of a new database of `rows` padded rows, `more` SQL
/// run after them: its path.
fn a_set(rows: u32, more: &str, dest: &std::path::Path) -> String {
    let c = cluster();
    let db = c.create_db();
    c.client(&db.name)
        .batch_execute(&format!(
            "CREATE TABLE t AS SELECT g, repeat(md5(g::text), 8) AS pad \
             FROM generate_series(1, {rows}) g; {more}"
        ))
        .unwrap();
    let out = run(command(bin("pgbackup"))
        .arg("--dest")
        .arg(dest)
        .args(["--db", &db.url, "--compress", "none"])
        .arg("--pg-bindir")
        .arg(c.bindir()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.records()[0]["path"].as_str().unwrap().to_string()
}

/// `line` run by a shell on a terminal of its own (script(1)), 200
/// columns wide, the tools signing and trusting this binary's keys.
fn on_a_terminal(line: &str) -> Command {
    let mut cmd = Command::new("script");
    opskit_testkit::signing::signed(&mut cmd);
    cmd.env_remove("OPSKIT_LOG").env("TERM", "xterm").args([
        "-qec",
        &format!("stty rows 50 cols 200; {line}"),
        "/dev/null",
    ]);
    cmd
}

/// On a terminal the same run draws a bar (share, bytes, rate, time left)
/// and clears it; the records still go to stdout alone.
#[test]
fn a_terminal_gets_a_bar() {
    let tmp = tempfile::tempdir().unwrap();
    let set = a_set(300_000, "", tmp.path());
    let name = std::path::Path::new(&set)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let records = tmp.path().join("records");
    // script(1) gives the tool a terminal on stdin and stderr; stdout goes
    // to a file, as in `verify-backup SET > records`.
    let line = format!(
        "{} {} > {}",
        bin("verify-backup").display(),
        opskit::sys::shell_quote(&set),
        records.display()
    );
    let term = run(&mut on_a_terminal(&line));
    assert_eq!(term.code, 0, "{}{}", term.stdout, term.stderr);
    assert!(
        term.stdout.contains(&format!("verifying {name} "))
            && term.stdout.contains("% of ")
            && term.stdout.contains("/s, "),
        "no bar drawn: {:?}",
        term.stdout
    );
    let recs = std::fs::read_to_string(&records).unwrap();
    assert!(recs.lines().all(|l| l.starts_with('{')), "{recs}");
    assert!(recs.contains("\"event\":\"verify\""), "{recs}");
}

/// The terminal goes away mid-restore (an SSH session lost, `script`
/// killed here): the run ends on its own terms, neither crashed by its
/// log lines and bars meeting a dead terminal nor leaving its scratch
/// database; its records still reach stdout.
#[test]
fn a_terminal_that_hangs_up_mid_restore() {
    let c = cluster();
    let tmp = tempfile::tempdir().unwrap();
    let set = a_set(400_000, "CREATE INDEX ON t (pad)", tmp.path());
    let (records, code) = (tmp.path().join("records"), tmp.path().join("code"));
    let pid = tmp.path().join("pid");
    let q = |p: &std::path::Path| opskit::sys::shell_quote(&p.to_string_lossy());
    // The shell outlives the hangup to say how verify-backup ended, and
    // says its pid: its scratch database is opskit_verify_<pid>_… (other
    // tests of this binary restore at the same time).
    let line = format!(
        "trap '' HUP; {} -v --restore-into {} --jobs 1 {} > {} & echo $! > {}; wait $!; echo $? > {}",
        q(&bin("verify-backup")),
        opskit::sys::shell_quote(&c.url("postgres")),
        opskit::sys::shell_quote(&set),
        q(&records),
        q(&pid),
        q(&code),
    );
    let mut term = on_a_terminal(&line)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let scratch = loop {
        match std::fs::read_to_string(&pid) {
            Ok(p) if p.ends_with('\n') => break format!("opskit_verify_{}_", p.trim()),
            _ => {
                assert!(std::time::Instant::now() < deadline, "no pid");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    while c.databases_starting_with(&scratch).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the restore never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    term.kill().unwrap();
    term.wait().unwrap();
    while !code.exists() || std::fs::read_to_string(&code).unwrap().trim().is_empty() {
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(60),
            "verify-backup never ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = std::fs::read_to_string(&code).unwrap();
    let recs = std::fs::read_to_string(&records).unwrap();
    assert!(
        matches!(status.trim(), "0" | "2"),
        "verify-backup ended with {status}: {recs}"
    );
    assert!(recs.contains("\"event\":\"summary\""), "{recs}");
    assert!(
        c.databases_starting_with(&scratch).is_empty(),
        "scratch database left"
    );
}
