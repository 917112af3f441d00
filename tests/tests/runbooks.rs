//! The runbooks cannot drift from the code: every command in a `sh` block
//! of docs/*.md names a program that exists (an opskit tool or procedure,
//! a make target, a unit in systemd/, or a known system command), and
//! every --flag it uses is one that program's --help lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::{TOOLS, bin};

const SYSTEM: [&str; 20] = [
    "systemctl",
    "journalctl",
    "psql",
    "promtool",
    "ls",
    "du",
    "sort",
    "head",
    "tail",
    "jq",
    "grep",
    "dmesg",
    "cat",
    "make",
    "age-keygen",
    "createdb",
    "bash",
    "minisign",
    "pg_rewind",
    "pg_basebackup",
];

fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .unwrap()
}

/// Commands of the `sh` blocks: continuation lines joined, pipelines and
/// `&&` lists split, `sudo [-u USER]` and VAR=value prefixes dropped.
fn commands(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut in_sh = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_sh = !in_sh && line.trim() == "```sh";
            continue;
        }
        if !in_sh || line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        pending.push_str(line.trim_end().trim_end_matches('\\'));
        pending.push(' ');
        if line.trim_end().ends_with('\\') {
            continue;
        }
        for part in split_outside_quotes(&pending) {
            let mut words: Vec<&str> = part.split_whitespace().collect();
            // `sudo [-u USER]` and VAR=value prefixes.
            loop {
                let skip = match words.as_slice() {
                    ["sudo", "-u", _, ..] => 3,
                    [w, ..] if *w == "sudo" || (w.contains('=') && !w.starts_with('-')) => 1,
                    _ => break,
                };
                words.drain(..skip);
            }
            if !words.is_empty() {
                out.push(words.join(" "));
            }
        }
        pending.clear();
    }
    out
}

/// Split a command line at `|`, `;` and `&&` that are not quoted.
fn split_outside_quotes(line: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quote = None;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, '|' | ';') => {
                parts.push(String::new());
                continue;
            }
            (None, '&') if chars.peek() == Some(&'&') => {
                chars.next();
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().unwrap().push(c);
    }
    parts
}

/// `flag` appears in `text` as a whole option, not as the start of a longer one.
fn lists(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(i, _)| {
        !text[i + flag.len()..]
            .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

const RUNBOOKS: [&str; 4] = [
    "deployment-guide.md",
    "backup-restore.md",
    "incident-response.md",
    "monitoring-guide.md",
];

/// Every command of every runbook, with the runbook it is in.
fn runbook_commands() -> Vec<(&'static str, String)> {
    RUNBOOKS
        .iter()
        .flat_map(|doc| {
            let text = std::fs::read_to_string(repo().join("docs").join(doc)).unwrap();
            commands(&text).into_iter().map(move |c| (*doc, c))
        })
        .collect()
}

fn help(prog: &Path, sub: &[&str]) -> String {
    let out = Command::new(prog).args(sub).arg("--help").output().unwrap();
    assert!(
        out.status.success(),
        "{} {sub:?} --help failed",
        prog.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn check(cmd: &str, at: &str) {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    let prog = words[0];
    let name = Path::new(prog).file_name().unwrap().to_str().unwrap();
    let flags: BTreeSet<&str> = words
        .iter()
        .filter(|w| w.starts_with("--"))
        .map(|w| w.split('=').next().unwrap())
        .collect();
    let text = if TOOLS.contains(&name) {
        let b = bin(name);
        let mut text = help(&b, &[]);
        // Subcommands (migrate status, ...) have their own flags.
        for w in &words[1..] {
            if !w.starts_with('-') && text.contains(&format!("\n  {w} ")) {
                text.push_str(&help(&b, &[w]));
            }
        }
        text
    } else if name.ends_with(".sh") {
        let script = repo().join("scripts").join(name);
        assert!(
            script.is_file(),
            "{at}: `{cmd}`: no procedure scripts/{name}"
        );
        help(&script, &[])
    } else if SYSTEM.contains(&name) {
        if name == "make" {
            let mk = std::fs::read_to_string(repo().join("Makefile")).unwrap();
            for t in words[1..].iter().filter(|w| !w.contains('=')) {
                assert!(
                    mk.contains(&format!("\n{t}:")),
                    "{at}: `{cmd}`: no make target {t}"
                );
            }
        }
        for w in &words[1..] {
            let w = w.trim_matches(['\'', '"']);
            if w.starts_with("opskit-") && (w.ends_with(".service") || w.ends_with(".timer")) {
                let unit = match w.split_once('@') {
                    Some((head, _)) => format!("{head}@.service"),
                    None => w.to_string(),
                };
                assert!(
                    repo().join("systemd").join(&unit).is_file(),
                    "{at}: `{cmd}`: no unit {unit}"
                );
            }
            if w.starts_with("monitoring/") {
                assert!(repo().join(w).is_file(), "{at}: `{cmd}`: no file {w}");
            }
        }
        return;
    } else {
        panic!("{at}: `{cmd}`: {prog} is neither an opskit program nor a known system command");
    };
    for f in flags {
        assert!(lists(&text, f), "{at}: `{cmd}`: {name} has no option {f}");
    }
}

#[test]
fn every_runbook_command_exists_with_its_options() {
    let mut n = 0;
    for (doc, cmd) in runbook_commands() {
        check(&cmd, doc);
        n += 1;
    }
    assert!(n > 40, "only {n} commands found");
}

#[test]
fn the_checker_catches_drift() {
    let bad = [
        "restore-system.sh --yes --no-such-flag",
        "healthcheck --nagio disk:/",
        "systemctl start opskit-nothing.service",
        "frobnicate --now",
        "make deploy-everything",
    ];
    for cmd in bad {
        let caught = std::panic::catch_unwind(|| check(cmd, "test"));
        assert!(caught.is_err(), "`{cmd}` passed the checker");
    }
    assert_eq!(
        commands("```sh\nsudo X=1 make build && \\\n  healthcheck --wait 2m | jq .\n```\n"),
        ["make build", "healthcheck --wait 2m", "jq ."]
    );
    assert_eq!(
        commands("```sh\nsudo -u opskit offsite pull s3://b/app latest\n```\n"),
        ["offsite pull s3://b/app latest"]
    );
}

/// And the runbooks' opskit commands run: against the test cluster, with
/// the paths they name standing for a test directory, none is refused as
/// a usage error.
#[test]
fn the_runbooks_opskit_commands_run() {
    use opskit_testkit::procs::{Procs, example_app, examples_dir};
    use opskit_testkit::sh::scripts;
    let c = opskit_testkit::cluster();
    let db = example_app(c);
    let mut p = Procs::new(c, &db.name);
    let checks = p.path("checks.ndjson");
    std::fs::write(
        &checks,
        format!(
            "{{\"name\":\"disk\",\"target\":\"disk:{}\",\"warn\":\"free_pct < 0\",\"crit\":\"free_pct < 0\"}}\n{{\"name\":\"db\",\"target\":\"postgres:\"}}\n{{\"name\":\"backups\",\"target\":\"backup:{}\"}}\n",
            p.dir.path().display(),
            p.root().display()
        ),
    )
    .unwrap();
    p.set("OPSKIT_CHECKS", checks.to_str().unwrap());
    // The PITR runbooks name the data directory; they stop before it (no
    // base set in this root).
    p.set("OPSKIT_PGDATA", c.data().to_str().unwrap());
    // The offsite commands reach a real S3 server, a bucket of their own.
    let s3 = opskit_testkit::s3::s3();
    let offsite_url = format!("s3://{}/app", s3.bucket("runbooks"));
    p.set("OPSKIT_OFFSITE_URL", &offsite_url);
    p.set("OPSKIT_OFFSITE_ALLOW_UNENCRYPTED", "1");
    for (k, v) in s3.env() {
        p.set(k, &v);
    }
    let logs = p.path("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("access.log"), "a line\n").unwrap();
    let lrconf = p.path("logrotate.conf");
    let example = std::fs::read_to_string(examples_dir().join("logrotate.conf")).unwrap();
    std::fs::write(
        &lrconf,
        example.replace("/var/log/websys", logs.to_str().unwrap()),
    )
    .unwrap();
    std::fs::create_dir_all(p.path("metrics")).unwrap();
    let out = opskit_testkit::tools::run(&mut p.script("backup-system.sh"));
    assert_eq!(out.code, 0, "{}", out.stderr);

    let stand_ins = [
        ("/etc/opskit/checks.ndjson", checks.display().to_string()),
        ("/etc/opskit/logrotate.conf", lrconf.display().to_string()),
        ("/var/backups/opskit", p.root().display().to_string()),
        (
            "/srv/app/db/migrations",
            examples_dir().join("migrations").display().to_string(),
        ),
        (
            "/var/lib/opskit-logrotate/logrotate.state",
            p.path("lr.state").display().to_string(),
        ),
        (
            "/var/lib/prometheus/node-exporter",
            p.path("metrics").display().to_string(),
        ),
        ("postgresql://opskit@localhost/postgres", c.url("postgres")),
        ("/srv/app", p.path("app").display().to_string()),
        (
            "/root/app.restored",
            p.path("app.restored").display().to_string(),
        ),
        ("s3://example-backups/app", offsite_url.clone()),
    ];
    let tools = bin("healthcheck");
    let path = format!(
        "{}:{}:{}",
        tools.parent().unwrap().display(),
        scripts().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut ran = vec![];
    for (doc, cmd) in runbook_commands() {
        let prog = cmd.split_whitespace().next().unwrap();
        if !(TOOLS.contains(&prog) || prog.ends_with(".sh")) {
            continue;
        }
        let mut line = cmd.clone();
        for (from, to) in &stand_ins {
            line = line.replace(from, to);
        }
        let mut sh = Command::new("bash");
        sh.args(["-c", &line])
            .env("PATH", &path)
            .env("DATABASE_URL", c.url(&db.name));
        p.configure(&mut sh);
        sh.env("DATABASE_URL", c.url(&db.name))
            .envs(s3.env())
            .envs(opskit_testkit::signing::keys().env());
        let out = opskit_testkit::tools::run(&mut sh);
        let refused = out.code == 64 || (prog == "healthcheck" && out.code == 3) || out.code > 3;
        assert!(
            !refused,
            "{doc}: `{cmd}` exited {}:\n{}",
            out.code, out.stderr
        );
        ran.push((cmd, out.code));
    }
    assert!(ran.len() >= 20, "{ran:?}");
    // The ones a healthy system passes, pass.
    for (cmd, code) in &ran {
        if cmd.starts_with("restore-system.sh")
            || cmd.starts_with("restore-test.sh")
            || cmd.contains("--check ")
            || cmd.starts_with("migrate ")
        {
            assert_eq!(*code, 0, "`{cmd}`");
        }
    }
}
