//! Every tool answers --help and --version, and a bad flag is a one-line
//! usage error: exit 64, or 3 (UNKNOWN) for healthcheck.

use std::process::Command;

use opskit_testkit::bin;
use opskit_testkit::tools::run;

const TOOLS: [(&str, i32); 6] = [
    ("pgbackup", 64),
    ("verify-backup", 64),
    ("prune", 64),
    ("healthcheck", 3),
    ("migrate", 64),
    ("logrotate-lite", 64),
];

#[test]
fn help_and_version() {
    for (tool, _) in TOOLS {
        let out = run(Command::new(bin(tool)).arg("--help"));
        assert_eq!(out.code, 0, "{tool} --help: {}", out.stderr);
        assert!(
            out.stdout.contains("Usage:"),
            "{tool} --help: {}",
            out.stdout
        );
        let out = run(Command::new(bin(tool)).arg("--version"));
        assert_eq!(out.code, 0);
        assert_eq!(
            out.stdout.trim(),
            format!("{tool} {}", env!("CARGO_PKG_VERSION")),
            "{tool} --version"
        );
    }
}

#[test]
fn unknown_flag_is_one_line_usage_error() {
    for (tool, code) in TOOLS {
        let out = run(Command::new(bin(tool)).arg("--no-such-flag"));
        assert_eq!(out.code, code, "{tool}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{tool}: {:?}", out.stderr);
        assert!(
            out.stderr.starts_with(&format!("{tool}: ")) && out.stderr.contains("--no-such-flag"),
            "{tool}: {}",
            out.stderr
        );
        assert!(
            out.stdout.is_empty(),
            "{tool} printed records for a usage error"
        );
    }
}

#[test]
fn a_closed_pipe_on_stdout_ends_quietly_with_status_0() {
    // Enough records to overflow the pipe after `head` has gone.
    let root = tempfile::tempdir().unwrap();
    for i in 0..3000 {
        let d = root.path().join(format!(
            "app-2026{:02}{:02}T{:02}0000Z",
            1 + i % 12,
            1 + i % 28,
            i % 24
        ));
        if std::fs::create_dir(&d).is_ok() {
            let name = d.file_name().unwrap().to_string_lossy().into_owned();
            let m = opskit_testkit::tools::minimal_manifest(&name);
            std::fs::write(d.join("MANIFEST.json"), m).unwrap();
        }
        std::fs::create_dir_all(root.path().join(format!("junk-{i}"))).unwrap();
    }
    let out = run(Command::new("bash")
        .args(["-o", "pipefail", "-c"])
        .arg(format!(
            "'{}' '{}' --keep-last 1 --dry-run | head -n1",
            bin("prune").display(),
            root.path().display()
        )));
    assert_eq!(out.code, 0, "stderr: {}", out.stderr);
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1);
}
