//! `make demo` from a checkout under a directory only root can enter
//! (#20 item 11): as root the throwaway cluster runs as the postgres user,
//! who cannot reach the checkout's `.demo/`; the demo must still run, show
//! its state and records under `.demo/`, and leave nothing behind.

use std::process::Command;

use opskit_testkit::bin;
use opskit_testkit::tools::run;

#[test]
fn the_demo_runs_from_a_checkout_only_root_can_enter() {
    // A 0700 parent: like /root, the postgres user cannot enter it.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let clone = tmp.path().join("opskit");
    std::fs::create_dir(&clone).unwrap();
    let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for part in ["scripts", "examples"] {
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{repo}/{part}"))
            .arg(&clone)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let bins = bin("pgbackup").parent().unwrap().to_path_buf();

    let out = run(Command::new("bash")
        .arg(clone.join("scripts/demo.sh"))
        .env("OPSKIT_BIN", &bins)
        .env_remove("DATABASE_URL"));
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("every procedure did what was expected"),
        "stdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    let demo = clone.join(".demo");
    assert!(demo.join("state/runs").is_dir(), "records under .demo/");
    assert!(demo.join("opskit.env").is_file());
    let root = runs_as_root();
    if root {
        assert!(
            out.stderr
                .contains("starting a throwaway PostgreSQL under /tmp/opskit-demo-pg."),
            "{}",
            out.stderr
        );
        // The cluster's own directory is gone, its log kept.
        let started = out
            .stderr
            .split("starting a throwaway PostgreSQL under ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap();
        assert!(
            !std::path::Path::new(started).exists(),
            "{started} left behind"
        );
        assert!(demo.join("pg-server.log").is_file());
        assert!(demo.join("pg").symlink_metadata().is_err());
    }
}

/// Whether the tests run as root (CI does), read from /proc.
fn runs_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
