//! The env file (`/etc/opskit/opskit.env`, or `$OPSKIT_ENV`) and the state
//! file `last-deploy.env` are read the way systemd's `EnvironmentFile=`
//! reads them (systemd.exec(5), `parse_env_file_internal` in systemd's
//! src/basic/env-file.c): as data, never as shell code, and only from a
//! regular file that nobody but its owner (root or the running user) can
//! write. The expected values below are what systemd gives the units for
//! the same lines.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::sh::{bash, env_text, hermetic, repo, write_mode};
use opskit_testkit::tools::{Output, run};

/// Prints each variable named in `$@`: `=value` when set, `!` when unset,
/// each terminated by NUL.
const PRINT: &str = r#"for __v; do if [[ -n ${!__v+x} ]]; then printf '=%s\0' "${!__v}"; else printf '!\0'; fi; done"#;

/// `load_env`, then the values of `vars` (`None`: unset).
fn load(
    cwd: &Path,
    env_file: &Path,
    preset: &[(&str, &str)],
    vars: &[&str],
) -> (Output, Vec<Option<String>>) {
    let out = bash(
        cwd,
        env_file,
        preset,
        20,
        &format!("load_env\n{PRINT}"),
        vars,
    );
    let values = values(&out);
    (out, values)
}

fn values(out: &Output) -> Vec<Option<String>> {
    out.stdout
        .split_terminator('\0')
        .map(|v| v.strip_prefix('=').map(str::to_string))
        .collect()
}

/// Files a command substitution in the env file would have created.
fn pwned(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("PWNED"))
        .collect()
}

fn check_values(out: &Output, got: &[Option<String>], want: &[(&str, Option<&str>)]) {
    assert_eq!(out.code, 0, "stderr:\n{}", out.stderr);
    assert_eq!(
        got.len(),
        want.len(),
        "stdout: {:?}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let mut wrong = vec![];
    for ((k, w), g) in want.iter().zip(got) {
        if g.as_deref() != *w {
            wrong.push(format!("{k}: want {w:?}, got {g:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\nstderr:\n{}",
        wrong.join("\n"),
        out.stderr
    );
}

/// Values that hold shell syntax (a password, a URL, command
/// substitutions) on lines of the simplest form, `KEY=VALUE`.
#[test]
fn values_with_shell_syntax_are_data_not_code() {
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("opskit.env");
    let text = [
        "X=$(touch PWNED)",
        "Y=`touch PWNED2`",
        "Z=\"$(touch PWNED3) `touch PWNED4` ${HOME}\"",
        "DATABASE_URL=postgresql://u:p@h/db?a=b&c=d",
        "PASSWORD=\"p#w?d;x&y\\$z'q\\\"r\"",
        "PASSWORD_BARE=p#w?d;x&y$z'q\"r",
        "AFTER=still read",
    ]
    .join("\n")
        + "\n";
    write_mode(&env, &text, 0o600);
    let want = [
        ("DATABASE_URL", Some("postgresql://u:p@h/db?a=b&c=d")),
        ("PASSWORD_BARE", Some("p#w?d;x&y$z'q\"r")),
        ("PASSWORD", Some("p#w?d;x&y$z'q\"r")),
        ("X", Some("$(touch PWNED)")),
        ("Y", Some("`touch PWNED2`")),
        ("Z", Some("$(touch PWNED3) `touch PWNED4` ${HOME}")),
        ("AFTER", Some("still read")),
    ];
    let vars: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    let (out, got) = load(d.path(), &env, &[], &vars);
    std::thread::sleep(std::time::Duration::from_millis(200)); // a backgrounded `touch`
    assert_eq!(
        pwned(d.path()),
        Vec::<String>::new(),
        "the env file ran commands; stderr:\n{}",
        out.stderr
    );
    check_values(&out, &got, &want);
}

/// Every rule of the syntax, line by line, with what systemd makes of it.
#[test]
fn corpus_reads_as_systemd_reads_it() {
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("opskit.env");
    // One physical line each; the index + 1 is the line number.
    let lines = [
        "# opskit.env written by the test",            // 1
        "; a comment of the other kind",               // 2
        "   # an indented comment",                    // 3
        "#COMMENTED=1",                                // 4
        "",                                            // 5
        "PLAIN=value   ",                              // 6
        "  SPACED\t =   two  words here  \t",          // 7
        "SQ='single $HOME \"x\" \\n # ; '",            // 8
        "DQ=\"a \\\"q\\\" \\\\ \\$HOME \\` \\n \\a\"", // 9
        "UNQ_ESC=a\\ b\\\\c\\#d\\$e\\\"f\\'g",         // 10
        "TRAILING_ESCAPED_SPACE=a\\ ",                 // 11
        "CONT=first \\",                               // 12
        "second",                                      // 13
        "DQ_CONT=\"one\\",                             // 14
        "two\"",                                       // 15
        "SQ_LINES='line one",                          // 16
        "line two'",                                   // 17
        "DQ_LINES=\"line one",                         // 18
        "line two\"",                                  // 19
        "CAT='a b'\"c d\"e",                           // 20
        "CAT_SPACED=\"x\"   'y'  ",                    // 21
        "MID_QUOTES=a'b c'd\"e\"",                     // 22
        "HASH=abc#def",                                // 23
        "HASH_SPACED=abc #def ;ghi",                   // 24
        "EQUALS=a=b=c",                                // 25
        "EMPTY=",                                      // 26
        "EMPTY_QUOTED=\"\"",                           // 27
        "DUP=first",                                   // 28
        "DUP=second",                                  // 29
        "PASSWORD=\"p#w?d;x&y\\$z'q\\\"r\"",           // 30
        "PASSWORD_BARE=p#w?d;x&y$z'q\"r",              // 31
        "X=$(touch PWNED)",                            // 32
        "Y=`touch PWNED2`",                            // 33
        "DATABASE_URL=postgresql://u:p@h/db?a=b&c=d",  // 34
        "FROM_ENV=from the file",                      // 35
        "this line is not an assignment",              // 36
        "export EXPORTED=yes",                         // 37
        "1BAD=digit first",                            // 38
        "BAD-NAME=dash",                               // 39
        "CRLF=value\r",                                // 40
        "LAST=no newline at the end",                  // 41
    ];
    let text = lines.join("\n"); // no newline after the last line
    write_mode(&env, &text, 0o600);
    let want = [
        ("COMMENTED", None),
        ("PLAIN", Some("value")),
        ("SPACED", Some("two  words here")),
        ("SQ", Some("single $HOME \"x\" \\n # ; ")),
        ("DQ", Some("a \"q\" \\ $HOME ` \\n \\a")),
        ("UNQ_ESC", Some("a b\\c#d$e\"f'g")),
        ("TRAILING_ESCAPED_SPACE", Some("a ")),
        ("CONT", Some("first second")),
        ("DQ_CONT", Some("onetwo")),
        ("SQ_LINES", Some("line one\nline two")),
        ("DQ_LINES", Some("line one\nline two")),
        ("CAT", Some("a bc de")),
        ("CAT_SPACED", Some("xy")),
        ("MID_QUOTES", Some("a'b c'd\"e\"")),
        ("HASH", Some("abc#def")),
        ("HASH_SPACED", Some("abc #def ;ghi")),
        ("EQUALS", Some("a=b=c")),
        ("EMPTY", Some("")),
        ("EMPTY_QUOTED", Some("")),
        ("DUP", Some("second")),
        ("PASSWORD", Some("p#w?d;x&y$z'q\"r")),
        ("PASSWORD_BARE", Some("p#w?d;x&y$z'q\"r")),
        ("X", Some("$(touch PWNED)")),
        ("Y", Some("`touch PWNED2`")),
        ("DATABASE_URL", Some("postgresql://u:p@h/db?a=b&c=d")),
        ("FROM_ENV", Some("from the environment")),
        ("EXPORTED", None),
        ("CRLF", Some("value")),
        ("LAST", Some("no newline at the end")),
    ];
    let vars: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    let (out, got) = load(
        d.path(),
        &env,
        &[("FROM_ENV", "from the environment")],
        &vars,
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        pwned(d.path()),
        Vec::<String>::new(),
        "the env file ran commands; stderr:\n{}",
        out.stderr
    );
    check_values(&out, &got, &want);
    // The ignored lines are named as file:line, one warning each, and
    // nothing else is said.
    let warnings: Vec<&str> = out.stderr.lines().collect();
    let file = env.display().to_string();
    for line in [36, 37, 38, 39] {
        let at = format!("{file}:{line}:");
        assert!(
            warnings.iter().any(|w| w.contains(&at)),
            "no warning naming {at}:\n{}",
            out.stderr
        );
    }
    assert_eq!(warnings.len(), 4, "{}", out.stderr);
    let export = warnings
        .iter()
        .find(|w| w.contains(&format!("{file}:37:")))
        .unwrap();
    assert!(export.contains("export"), "{export}");
}

/// The env files the procedure tests write (`Procs::set`: `KEY="value"`,
/// with `\`, `"`, `$` and `` ` `` escaped) read back exactly, a newline in
/// a value included.
#[test]
fn double_quoted_values_as_the_procedure_tests_write_them_read_back_exactly() {
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("opskit.env");
    let values = [
        ("A", "/tmp/.tmpAbC/backups"),
        ("B", "C:\\dir\\ \"quoted\" $HOME `id` $(id) ${X}"),
        ("C", "p#w?d;x&y$z'q\"r"),
        ("D", "  spaces around  "),
        ("E", "line one\nline two"),
        ("F", "ends with a backslash\\"),
        ("G", "\\n is not a newline"),
        ("H", "--keep-daily 7 --keep-weekly 4"),
    ];
    let text = env_text(values.iter().copied());
    write_mode(&env, &text, 0o644);
    let want: Vec<(&str, Option<&str>)> = values.iter().map(|(k, v)| (*k, Some(*v))).collect();
    let vars: Vec<&str> = values.iter().map(|(k, _)| *k).collect();
    let (out, got) = load(d.path(), &env, &[], &vars);
    check_values(&out, &got, &want);
    assert_eq!(out.stderr, "", "no warnings");
}

fn refused(out: &Output, file: &Path) {
    assert_eq!(
        out.code, 64,
        "stdout: {:?}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {}", out.stderr);
    assert!(
        lines[0].contains(&file.display().to_string()),
        "names the file: {}",
        out.stderr
    );
    assert_eq!(out.stdout, "", "nothing was loaded");
}

#[test]
fn env_file_writable_by_group_or_others_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("opskit.env");
    // Readable by all is allowed (only writing matters here).
    for mode in [0o600, 0o640, 0o644, 0o400] {
        write_mode(&env, "SECRET=s3cret\n", mode);
        let (out, got) = load(d.path(), &env, &[], &["SECRET"]);
        check_values(&out, &got, &[("SECRET", Some("s3cret"))]);
    }
    for mode in [0o620, 0o602, 0o666, 0o660, 0o622] {
        write_mode(&env, "SECRET=s3cret\n", mode);
        let (out, _) = load(d.path(), &env, &[], &["SECRET"]);
        refused(&out, &env);
        assert!(out.stderr.contains("writable"), "{mode:o}: {}", out.stderr);
    }
}

#[test]
fn env_file_owned_by_another_user_is_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let env = d.path().join("opskit.env");
    write_mode(&env, "SECRET=s3cret\n", 0o600);
    std::os::unix::fs::chown(&env, Some(65534), Some(65534)).unwrap();
    // Run as root, the file of nobody is refused...
    let (out, _) = load(d.path(), &env, &[], &["SECRET"]);
    refused(&out, &env);
    assert!(
        out.stderr.contains("65534") || out.stderr.contains("nobody"),
        "{}",
        out.stderr
    );
    // ... and the same file is the configuration of nobody itself.
    let mut cmd = Command::new("setpriv");
    hermetic(&mut cmd, d.path());
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "bash",
        "-c",
    ])
    .arg(format!(
        "set -euo pipefail\nsource {}/scripts/lib/common.sh\nload_env\n{PRINT}",
        repo().display()
    ))
    .args(["bash", "SECRET"])
    .env("OPSKIT_ENV", &env);
    let out = run(&mut cmd);
    check_values(&out, &values(&out), &[("SECRET", Some("s3cret"))]);
}

#[test]
fn a_fifo_as_env_file_is_refused_without_hanging() {
    let d = tempfile::tempdir().unwrap();
    let fifo = d.path().join("opskit.env");
    let st = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(st.success());
    let t0 = std::time::Instant::now();
    let (out, _) = load(d.path(), &fifo, &[], &["SECRET"]);
    assert!(t0.elapsed().as_secs() < 10, "took {:?}", t0.elapsed());
    refused(&out, &fifo);
    // No env file (missing, or /dev/null as restore-pitr.sh gives its
    // child) is no configuration, as before.
    for none in [d.path().join("missing.env"), PathBuf::from("/dev/null")] {
        let (out, got) = load(d.path(), &none, &[("KEPT", "k")], &["KEPT", "SECRET"]);
        check_values(&out, &got, &[("KEPT", Some("k")), ("SECRET", None)]);
        assert_eq!(out.stderr, "");
    }
}

/// A state directory for rollback-migration.sh, and a fake `migrate` tool
/// (in OPSKIT_BIN) that records its arguments: the script then runs
/// without a database.
struct Rollback {
    dir: tempfile::TempDir,
}

impl Rollback {
    fn new(last_deploy: &str, mode: u32) -> Rollback {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::create_dir_all(p.join("state")).unwrap();
        let fake = p.join("bin/migrate");
        write_mode(
            &fake,
            &format!(
                "#!/bin/bash\nprintf '%s\\0' \"$@\" >>'{}'\n",
                p.join("migrate.args").display()
            ),
            0o755,
        );
        write_mode(&p.join("state/last-deploy.env"), last_deploy, mode);
        Rollback { dir }
    }

    fn last_deploy(&self) -> PathBuf {
        self.dir.path().join("state/last-deploy.env")
    }

    fn run(&self) -> Output {
        let p = self.dir.path();
        let mut cmd = Command::new("timeout");
        hermetic(&mut cmd, p);
        cmd.args(["-s", "KILL", "30"])
            .arg(repo().join("scripts/rollback-migration.sh"))
            .env("OPSKIT_ENV", p.join("no-env-file"))
            .env("OPSKIT_BIN", p.join("bin"))
            .env("OPSKIT_STATE_DIR", p.join("state"));
        run(&mut cmd)
    }

    /// The arguments `migrate` was called with (every call, in order).
    fn migrate_args(&self) -> Vec<String> {
        match std::fs::read_to_string(self.dir.path().join("migrate.args")) {
            Ok(s) => s.split_terminator('\0').map(str::to_string).collect(),
            Err(_) => vec![],
        }
    }
}

#[test]
fn rollback_reads_last_deploy_env_as_data() {
    let r = Rollback::new(
        "BEFORE_VERSION=$(touch PWNED)\n\
         PRE_MIGRATION_SET=`touch PWNED2`\n\
         MIGRATIONS_DIR=\"$(touch PWNED3); x\"\n",
        0o600,
    );
    let out = r.run();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        pwned(r.dir.path()),
        Vec::<String>::new(),
        "last-deploy.env ran commands; stderr:\n{}",
        out.stderr
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        r.migrate_args(),
        [
            "--dir",
            "$(touch PWNED3); x",
            "down",
            "--to",
            "$(touch PWNED)"
        ],
        "{}",
        out.stderr
    );
}

#[test]
fn rollback_refuses_a_last_deploy_env_others_could_write() {
    let text = "BEFORE_VERSION=20260101000000\nMIGRATIONS_DIR=/srv/app/db/migrations\n";
    let r = Rollback::new(text, 0o666);
    let out = r.run();
    refused(&out, &r.last_deploy());
    assert_eq!(r.migrate_args(), Vec::<String>::new(), "nothing was run");

    let r = Rollback::new(text, 0o600);
    std::os::unix::fs::chown(r.last_deploy(), Some(65534), Some(65534)).unwrap();
    let out = r.run();
    refused(&out, &r.last_deploy());
    assert_eq!(r.migrate_args(), Vec::<String>::new(), "nothing was run");
}

/// What migrate-production.sh writes into last-deploy.env
/// (`write_env_file`) reads back exactly, whatever the values hold; the
/// file is 0600 and replaces, never follows, a symlink at its name.
#[test]
fn last_deploy_env_round_trips_through_its_writer() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("last-deploy.env");
    let victim = d.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    std::os::unix::fs::symlink(&victim, &file).unwrap();
    let values = [
        "20260101000000",
        "",
        "/var/backups/opskit/app-20260101T000000Z",
        "$(touch PWNED) `touch PWNED2` ${HOME} $HOME",
        "p#w?d;x&y$z'q\"r",
        "it's 'single' quoted",
        "back\\slash\\",
        "\\\"\\$\\`\\\\",
        "  leading and trailing  ",
        "two\nlines\n",
        "tab\there\r",
        "# not a comment",
        "; nor this",
        "=",
        "ünïcødé ✓",
    ];
    let mut args = vec![file.display().to_string()];
    for (i, v) in values.iter().enumerate() {
        args.push(format!("V{i}"));
        args.push(v.to_string());
    }
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    // What migrate-production.sh writes, read back as rollback-migration.sh reads it.
    let script = r#"write_env_file "$@"
read_env_file "$1"
shift
while (($#)); do printf '=%s\0' "${OPSKIT_ENVFILE_VALUES[$1]}"; shift 2; done"#;
    let out = bash(
        d.path(),
        &d.path().join("none.env"),
        &[],
        20,
        script,
        &arg_refs,
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.stderr, "", "no warnings");
    let got = values_of(&out);
    assert_eq!(
        got,
        values.iter().map(|v| v.to_string()).collect::<Vec<_>>()
    );
    assert_eq!(pwned(d.path()), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.file_type().is_file(), "the symlink was replaced");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
}

fn values_of(out: &Output) -> Vec<String> {
    values(out).into_iter().map(|v| v.expect("set")).collect()
}

/// The example env file (what install.sh puts in /etc/opskit) reads
/// without a warning, and as the shell read it before.
#[test]
fn the_example_env_file_reads_without_warnings() {
    let d = tempfile::tempdir().unwrap();
    let env = d.path().join("opskit.env");
    let text = std::fs::read_to_string(repo().join("examples/opskit.env")).unwrap();
    write_mode(&env, &text, 0o600);
    let want = [
        ("DATABASE_URL", Some("postgresql://app@localhost:5432/app")),
        ("OPSKIT_BACKUP_FILES", Some("/srv/app/uploads /etc/app")),
        (
            "OPSKIT_RETENTION",
            Some("--keep-daily 7 --keep-weekly 4 --keep-monthly 6"),
        ),
        ("OPSKIT_HEALTH_EXPECT", Some("json.status == healthy")),
        ("OPSKIT_APP_STOP", Some("systemctl stop app.service")),
        ("OPSKIT_AGE_RECIPIENTS", None),
    ];
    let vars: Vec<&str> = want.iter().map(|(k, _)| *k).collect();
    let (out, got) = load(d.path(), &env, &[], &vars);
    check_values(&out, &got, &want);
    assert_eq!(out.stderr, "", "no warnings");
    // Owned by root, but group-writable: refused.
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o664)).unwrap();
    let (out, _) = load(d.path(), &env, &[], &vars);
    refused(&out, &env);
}
