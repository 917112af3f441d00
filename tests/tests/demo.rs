//! `make demo` from a checkout under a directory only root can enter
//! (#20 item 11): as root the throwaway cluster runs as the postgres user,
//! who cannot reach the checkout's `.demo/`; the demo must still run, show
//! its state and records under `.demo/`, and leave nothing behind.
//!
//! The demo runs every capability (#32), the offsite "server is gone" drill
//! and the point-in-time drill included, and writes the metrics of every
//! tool: the Grafana dashboard is checked against them (every metric a
//! panel names is one the tools wrote here), and a planted panel that names
//! one they do not write is caught.

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
        .env("OPSKIT_WEED", opskit_testkit::s3::weed())
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
    for drill in [
        "server gone: restore-system.sh --from-offsite",
        "PITR: the 1500 orders are back in the side cluster",
    ] {
        assert!(out.stdout.contains(drill), "{drill} in\n{}", out.stdout);
    }
    assert!(
        out.stdout.contains("recovery window") && out.stdout.contains("PITR:  any time from"),
        "{}",
        out.stdout
    );
    dashboard_against(&demo.join("metrics"), tmp.path());
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

/// The dashboard names only metrics the demo's tools wrote, and promtool
/// accepts every expression; a planted panel naming another is caught.
fn dashboard_against(metrics: &std::path::Path, scratch: &std::path::Path) {
    use opskit_testkit::dashboard;
    let written = dashboard::written(metrics);
    for m in [
        "opskit_recovery_window_newest_age_seconds",
        "opskit_offsite_push_success",
        "opskit_logrotate_success",
        "opskit_restore_test_duration_seconds",
    ] {
        assert!(written.contains(m), "the demo wrote {m}: {written:?}");
    }
    let mut d = dashboard::load();
    assert_eq!(
        dashboard::problems(&d, &written, scratch),
        Vec::<String>::new()
    );
    let panels = d["panels"].as_array_mut().unwrap();
    let mut planted = panels.last().unwrap().clone();
    planted["title"] = "planted".into();
    planted["targets"][0]["expr"] =
        "opskit_backup_nonexistent_seconds{instance=~\"$instance\"}".into();
    panels.push(planted);
    let found = dashboard::problems(&d, &written, scratch);
    assert!(
        found.len() == 1 && found[0].contains("panel 'planted': opskit_backup_nonexistent_seconds"),
        "{found:?}"
    );
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
