//! Attacks on the restore procedures (`scripts/`), without a database:
//! the tools they call are stubs that record what they were given.
//!
//! - the result log of a backup root: a set name in it is never a path,
//!   and another database's newer set (another series) is never taken;
//! - the failure paths of restore-system.sh after the application was
//!   stopped, and the history file push after restore-pitr.sh --swap.
//!
//! `OPSKIT_TEST_SCRIPTS=DIR` runs these against another copy of `scripts/`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use opskit_testkit::sh::{env_file, is_root, procedure, set_mode, source, stub, write_mode};
use opskit_testkit::tools::Output;

// 1. The verdict log names sets, never paths; a root holds several
// series, and restore-system.sh takes its database's (billing's newer set
// was taken for app's before).

#[test]
fn the_newest_verified_set_is_never_a_path_from_the_log_nor_another_series() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    let root = p.join("backups");
    for set in [
        "backups/app-20260101T000000Z",
        "backups/billing-20970101T000000Z",
        "backups/my_app-20250101T000000Z",
        "outside-20990101T000000Z",
        "backups/sub/deeper-20980101T000000Z",
    ] {
        fs::create_dir_all(p.join(set)).unwrap();
        let name = set.rsplit('/').next().unwrap();
        let manifest = opskit_testkit::tools::minimal_dump_manifest(name);
        fs::write(p.join(set).join("MANIFEST.json"), manifest).unwrap();
    }
    let lines = [
        r#"{"event":"verify","ok":true,"set":"app-20260101T000000Z"}"#,
        r#"{"event":"verify","ok":true,"set":"billing-20970101T000000Z"}"#,
        r#"{"event":"verify","ok":true,"set":"my_app-20250101T000000Z"}"#,
        r#"{"event":"verify","ok":true,"set":"../outside-20990101T000000Z"}"#,
        r#"{"event":"verify","ok":true,"set":"sub/deeper-20980101T000000Z"}"#,
        &format!(
            r#"{{"event":"verify","ok":true,"set":"{}/outside-20990101T000000Z"}}"#,
            p.display()
        ),
    ];
    fs::write(root.join("verified.ndjson"), lines.join("\n") + "\n").unwrap();
    // The tool that answers (verify-backup --newest-verified) lists the
    // root itself: a name in the log is never a path.
    let bins = opskit_testkit::bin("verify-backup");
    let bins = bins.parent().unwrap().to_str().unwrap();
    let out = source(
        p,
        &[("OPSKIT_BIN", bins)],
        &format!("newest_verified {} app", root.display()),
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(
        out.stdout.trim_end(),
        root.join("app-20260101T000000Z").display().to_string(),
        "stderr:\n{}",
        out.stderr
    );
    // A database named `my app` (`my%20app` in the URL): its sets are
    // `my_app-…`, as pgbackup names them.
    let out = source(
        p,
        &[
            ("OPSKIT_BIN", bins),
            ("DATABASE_URL", "postgresql://db.example/my%20app"),
        ],
        &format!("newest_verified {} \"$(backup_series)\"", root.display()),
    );
    assert_eq!(
        out.stdout.trim_end(),
        root.join("my_app-20250101T000000Z").display().to_string(),
        "stderr:\n{}",
        out.stderr
    );
}

// 2. restore-system.sh: the application is never left stopped silently.

/// restore-system.sh with stub verify-backup (the set checks and restores)
/// and a stub psql that fails at `fail_at` (`exists`: the query whether
/// the database exists; `terminate`: ending its sessions).
fn restore_with_failing_psql(fail_at: &str) -> (Output, tempfile::TempDir) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    stub(
        &p.join("bin"),
        "verify-backup",
        r#"echo '{"event":"verify","ok":true,"checks":[]}'"#,
    );
    stub(
        &p.join("pgbin"),
        "psql",
        &format!(
            r#"case "$*" in
  *pg_terminate_backend*) what=terminate ;;
  *"FROM pg_database"*) what=exists ;;
  *) what=other ;;
esac
echo "$what" >>{log}
if [[ $what == {fail_at} ]]; then echo "psql: error: connection to server failed" >&2; exit 2; fi
[[ $what == exists ]] && echo 1
exit 0"#,
            log = p.join("psql.log").display()
        ),
    );
    let set = p.join("backups/app-20260101T000000Z");
    fs::create_dir_all(&set).unwrap();
    fs::write(
        set.join("MANIFEST.json"),
        r#"{"started_at":"2026-01-01T00:00:00Z","database":{"file":"db.dump"}}"#,
    )
    .unwrap();
    env_file(
        &p.join("opskit.env"),
        &[
            ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app".into()),
            (
                "OPSKIT_BACKUP_ROOT",
                p.join("backups").display().to_string(),
            ),
            ("OPSKIT_PG_BINDIR", p.join("pgbin").display().to_string()),
            (
                "OPSKIT_APP_STOP",
                format!("touch {}", p.join("app-stopped").display()),
            ),
            (
                "OPSKIT_APP_START",
                format!("touch {}", p.join("app-started").display()),
            ),
        ],
    );
    let out = procedure(
        p,
        &p.join("opskit.env"),
        &p.join("bin"),
        "restore-system.sh",
        &["--yes", "--no-health", set.to_str().unwrap()],
    );
    (out, d)
}

#[test]
fn a_failing_server_after_the_application_stopped_starts_it_again() {
    for fail_at in ["exists", "terminate"] {
        let (out, d) = restore_with_failing_psql(fail_at);
        let log = fs::read_to_string(d.path().join("psql.log")).unwrap_or_default();
        assert!(
            log.lines().any(|l| l == fail_at),
            "{fail_at}: psql ran {log:?}"
        );
        assert!(d.path().join("app-stopped").exists(), "{}", out.stderr);
        assert!(
            d.path().join("app-started").exists(),
            "{fail_at}: the application was left stopped; exit {}, stderr:\n{}",
            out.code,
            out.stderr
        );
        assert_eq!(out.code, 2, "{fail_at}: {}", out.stderr);
        assert!(
            out.stderr.contains("nothing was swapped")
                && out.stderr.contains("started the application again"),
            "{fail_at}: {}",
            out.stderr
        );
    }
}

// 3. restore-pitr.sh --swap: the history file is pushed as archive_command
// pushes, and its failure is named, not fatal.

/// restore-pitr.sh started as root for a data directory of `nobody`: stub
/// walarchive (restore makes a recovered directory with a history file;
/// push checks that it can read its signing key and has recipients, as
/// the real one does, and records what it was given), pg_ctl, psql and
/// healthcheck.
struct Pitr {
    dir: tempfile::TempDir,
}

impl Pitr {
    fn new() -> Pitr {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        set_mode(p, 0o755);
        let cluster = p.join("cluster");
        fs::create_dir_all(cluster.join("data")).unwrap();
        let log = cluster.join("calls.log");
        fs::write(&log, "").unwrap();
        stub(
            &p.join("bin"),
            "walarchive",
            &format!(
                r##"log={log}
[[ $1 == -q ]] && shift
cmd=$1; shift
case $cmd in
restore)
    while (($#)); do [[ $1 == --pgdata ]] && pgdata=$2; shift; done
    mkdir -p "$pgdata/pg_wal"
    : >"$pgdata.log"
    printf '1\t0/3000000\tno recovery target specified\n' >"$pgdata/pg_wal/00000002.history"
    echo "# written by opskit for recovery" >"$pgdata/postgresql.auto.conf"
    printf '{{"event":"recovery","pgdata":"%s","superuser":"nobody","set":"app-base-20260101T000000Z","base_finished_at":"2026-01-01T00:00:00Z","files":1,"start_options":"","session_options":"","target":"latest"}}\n' "$pgdata"
    ;;
push)
    key=${{OPSKIT_SIGNING_KEY:-}} rcpt=${{OPSKIT_AGE_RECIPIENTS_FILE:-}} name=$2
    while (($#)); do
        case $1 in
            --signing-key) key=$2; shift ;;
            --encrypt-to-file) rcpt=$2; shift ;;
        esac
        shift
    done
    echo "push $name key=$key recipients=$rcpt" >>"$log"
    [[ -r $key ]] || {{ echo "walarchive: cannot read the signing key $key" >&2; exit 2; }}
    [[ -n $rcpt ]] || {{ echo "walarchive: the root holds encrypted sets: refusing to archive WAL there in plaintext" >&2; exit 64; }}
    [[ -e {fail} ]] && {{ echo "walarchive: disk full" >&2; exit 2; }}
    exit 0
    ;;
esac"##,
                log = log.display(),
                fail = p.join("push-fails").display()
            ),
        );
        stub(
            &p.join("bin"),
            "healthcheck",
            &format!("echo \"healthcheck $*\" >>{}", log.display()),
        );
        stub(&p.join("pgbin"), "pg_ctl", "exit 0");
        stub(
            &p.join("pgbin"),
            "psql",
            r#"case "$*" in *pg_is_in_recovery*) echo f ;; *) echo "2026-01-01 00:00:00+00" ;; esac"#,
        );
        // opskit's key, which postgres (here: nobody) cannot read, and the
        // server user's own.
        write_mode(&p.join("opskit.key"), "opskit's secret key\n", 0o600);
        write_mode(
            &cluster.join("postgres.key"),
            "postgres's secret key\n",
            0o600,
        );
        write_mode(&p.join("recipients.txt"), "age1recipient\n", 0o644);
        fs::create_dir(p.join("backups")).unwrap();
        let st = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(&cluster)
            .status()
            .unwrap();
        assert!(st.success());
        env_file(
            &p.join("opskit.env"),
            &[
                (
                    "OPSKIT_BACKUP_ROOT",
                    p.join("backups").display().to_string(),
                ),
                ("OPSKIT_PGDATA", cluster.join("data").display().to_string()),
                ("OPSKIT_PG_BINDIR", p.join("pgbin").display().to_string()),
                ("OPSKIT_PG_STOP", "true".into()),
                ("OPSKIT_PG_START", "true".into()),
                ("OPSKIT_HEALTH_WAIT", "5s".into()),
                (
                    "OPSKIT_SIGNING_KEY",
                    p.join("opskit.key").display().to_string(),
                ),
                (
                    "OPSKIT_PITR_SIGNING_KEY",
                    cluster.join("postgres.key").display().to_string(),
                ),
                (
                    "OPSKIT_AGE_RECIPIENTS_FILE",
                    p.join("recipients.txt").display().to_string(),
                ),
            ],
        );
        Pitr { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn swap(&self) -> Output {
        procedure(
            self.dir.path(),
            &self.path("opskit.env"),
            &self.path("bin"),
            "restore-pitr.sh",
            &["--to-latest", "--swap", "--yes"],
        )
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.path("cluster/calls.log"))
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn the_swapped_in_timelines_history_is_pushed_with_the_server_users_key_and_recipients() {
    if !is_root() {
        eprintln!("not root: restore-pitr.sh's switch to the data directory's owner is not tried");
        return;
    }
    let t = Pitr::new();
    let out = t.swap();
    let calls = t.calls();
    let want = format!(
        "push 00000002.history key={} recipients={}",
        t.path("cluster/postgres.key").display(),
        t.path("recipients.txt").display()
    );
    assert!(
        calls.contains(&want),
        "want {want}\ncalls: {calls:#?}\nexit {}, stderr:\n{}",
        out.code,
        out.stderr
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("recovered: the cluster in"),
        "{}",
        out.stderr
    );
    assert!(
        calls.last().unwrap().starts_with("healthcheck")
            && calls.last().unwrap().contains("postgres:"),
        "the health gate ran last: {calls:#?}"
    );
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
}

#[test]
fn a_failed_history_push_is_named_and_the_health_gate_still_decides() {
    if !is_root() {
        eprintln!("not root: restore-pitr.sh's switch to the data directory's owner is not tried");
        return;
    }
    let t = Pitr::new();
    fs::write(t.path("push-fails"), "").unwrap();
    let out = t.swap();
    let calls = t.calls();
    assert_eq!(out.code, 0, "calls: {calls:#?}\nstderr:\n{}", out.stderr);
    let warning = out
        .stderr
        .lines()
        .find(|l| l.contains("warning:") && l.contains("00000002.history"))
        .unwrap_or_else(|| panic!("no warning naming the history file:\n{}", out.stderr));
    // The command to run by hand, complete: the file, the root, the key
    // and the recipients.
    for part in [
        "walarchive".to_string(),
        " push ".to_string(),
        t.path("cluster/data/pg_wal/00000002.history")
            .display()
            .to_string(),
        format!("--root {}", t.path("backups").display()),
        format!("--signing-key {}", t.path("cluster/postgres.key").display()),
        format!("--encrypt-to-file {}", t.path("recipients.txt").display()),
    ] {
        assert!(warning.contains(&part), "{part} not in: {warning}");
    }
    assert!(
        calls.last().unwrap().starts_with("healthcheck"),
        "the health gate ran after the push: {calls:#?}"
    );
    assert!(
        out.stderr.contains("recovered: the cluster in"),
        "{}",
        out.stderr
    );
}
