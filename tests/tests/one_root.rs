//! One reading of a backup root for every tool (`opskit::root`,
//! `opskit::verdicts`): the tools used to disagree on symlinked sets and on
//! which of two sets made in the same second is the newest.

use std::fs;
use std::path::Path;
use std::process::Command;

use opskit_testkit::tools::{Output, minimal_dump_manifest, run};
use opskit_testkit::{bin, signing};

fn set(root: &Path, name: &str) {
    fs::create_dir_all(root.join(name)).unwrap();
    fs::write(
        root.join(name).join("MANIFEST.json"),
        minimal_dump_manifest(name),
    )
    .unwrap();
}

fn verified(root: &Path, names: &[&str]) {
    let lines: String = names
        .iter()
        .map(|n| {
            serde_json::json!({"event": "verify", "tool": "verify-backup", "ts": "2026-12-06T00:00:00Z",
                "ok": true, "set": n, "path": root.join(n), "depth": "structural",
                "failed_checks": 0, "checks": [], "duration_s": 0.1})
            .to_string()
                + "\n"
        })
        .collect();
    fs::write(root.join("verified.ndjson"), lines).unwrap();
}

fn tool(name: &str) -> Command {
    let mut c = signing::command(bin(name));
    c.env_remove("OPSKIT_LOG");
    c
}

/// What each tool takes as the newest set of `root`.
fn newest_everywhere(root: &Path) -> Vec<(&'static str, String)> {
    let field = |out: &Output, event: &str, key: &str| -> String {
        out.events(event)
            .first()
            .and_then(|r| r[key].as_str().map(str::to_string))
            .unwrap_or_else(|| format!("nothing: {}", out.stderr))
    };
    let name_of = |p: String| p.rsplit('/').next().unwrap_or("").to_string();
    let latest = run(tool("verify-backup")
        .arg("--latest")
        .arg(root)
        .arg("--quick"));
    let newest = run(tool("verify-backup").arg("--newest-verified").arg(root));
    let health = run(tool("healthcheck").arg(format!("backup:{}", root.display())));
    let prune = run(tool("prune")
        .arg(root)
        .args(["--keep-last", "1", "--dry-run"])
        .stdin(std::process::Stdio::null()));
    let kept = prune
        .events("prune")
        .into_iter()
        .find(|r| r["action"] == "keep")
        .map(|r| r["name"].as_str().unwrap().to_string())
        .unwrap_or_default();
    vec![
        (
            "verify-backup --latest",
            name_of(field(&latest, "verify", "path")),
        ),
        (
            "verify-backup --newest-verified",
            field(&newest, "newest_verified", "set"),
        ),
        (
            "healthcheck backup:",
            health.events("check")[0]["values"]["newest"]
                .as_str()
                .unwrap_or("none")
                .to_string(),
        ),
        ("prune --keep-last 1", kept),
    ]
}

/// Two sets made in the same second: the same one is the newest for
/// every tool (time, then name; healthcheck picked one at random).
#[test]
fn two_sets_in_the_same_second_have_one_newest() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    for n in [
        "app-20261201T030000Z",
        "b-20261206T030000Z",
        "a-20261206T030000Z",
    ] {
        set(&root, n);
    }
    verified(
        &root,
        &[
            "app-20261201T030000Z",
            "a-20261206T030000Z",
            "b-20261206T030000Z",
        ],
    );
    for (tool, newest) in newest_everywhere(&root) {
        assert_eq!(newest, "b-20261206T030000Z", "{tool}");
    }
}

/// A symlinked directory in the root, even one named like a newer set, is
/// never followed and never a set, for every tool: a root another user can
/// write must not point a restore at a directory of their choosing.
#[test]
fn a_symlinked_set_is_no_set_for_any_tool() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("backups");
    set(&root, "app-20261201T030000Z");
    let away = tmp.path().join("away");
    set(&away, "app-20261205T030000Z");
    std::os::unix::fs::symlink(
        away.join("app-20261205T030000Z"),
        root.join("app-20261205T030000Z"),
    )
    .unwrap();
    verified(&root, &["app-20261201T030000Z", "app-20261205T030000Z"]);
    for (tool, newest) in newest_everywhere(&root) {
        assert_eq!(newest, "app-20261201T030000Z", "{tool}");
    }
    let prune = run(tool("prune")
        .arg(&root)
        .args(["--keep-last", "1"])
        .stdin(std::process::Stdio::null()));
    let link = prune
        .events("prune")
        .into_iter()
        .find(|r| r["name"] == "app-20261205T030000Z")
        .unwrap();
    assert_eq!(link["action"], "ignored", "{link}");
    assert!(away.join("app-20261205T030000Z/MANIFEST.json").exists());
}
