//! What runs on servers: `make install DESTDIR=...` puts every piece in
//! place, the systemd units verify, score 2.5 or lower in
//! `systemd-analyze security`, and have valid calendars; the Prometheus
//! alert rules pass their `promtool` tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use opskit_testkit::bin;
use opskit_testkit::sh::repo;
use opskit_testkit::tools::run;

/// Install into a temp DESTDIR from this workspace's (debug) build.
fn installed() -> tempfile::TempDir {
    let dest = tempfile::tempdir().unwrap();
    let tools = bin("logrotate-lite");
    let out = run(Command::new(repo().join("scripts/install.sh"))
        .env("DESTDIR", dest.path())
        .env("OPSKIT_BUILD_DIR", tools.parent().unwrap()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains("systemctl enable --now opskit-backup.timer"),
        "{}",
        out.stdout
    );
    dest
}

fn units(dest: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dest.join("etc/systemd/system"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

fn directives<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn install_puts_every_piece_in_place() {
    let dest = installed();
    let d = dest.path();
    for t in opskit_testkit::TOOLS {
        assert!(d.join("usr/local/bin").join(t).is_file(), "{t}");
    }
    let env = d.join("etc/opskit/opskit.env");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&env).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the env file holds a password");
    let root = std::fs::metadata(d.join("var/backups/opskit")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&root.permissions()) & 0o777,
        0o700
    );
    // An edited env file survives a second install.
    std::fs::write(&env, "DATABASE_URL=postgresql://edited\n").unwrap();
    let tools = bin("logrotate-lite");
    let out = run(Command::new(repo().join("scripts/install.sh"))
        .env("DESTDIR", d)
        .env("OPSKIT_BUILD_DIR", tools.parent().unwrap()));
    assert_eq!(out.code, 0);
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "DATABASE_URL=postgresql://edited\n"
    );
    // Every ExecStart names an installed executable.
    for u in units(d) {
        let text = std::fs::read_to_string(&u).unwrap();
        for exec in directives(&text, "ExecStart") {
            let prog = exec
                .split_whitespace()
                .next()
                .unwrap()
                .trim_start_matches(['-', '@', '+', '!']);
            let p = d.join(prog.trim_start_matches('/'));
            assert!(
                p.is_file(),
                "{}: ExecStart {prog} is not installed",
                u.display()
            );
        }
    }
    // Uninstall removes the programs and units, keeps the configuration.
    let out = run(Command::new(repo().join("scripts/install.sh"))
        .arg("--uninstall")
        .env("DESTDIR", d));
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!d.join("usr/local/bin/pgbackup").exists());
    assert!(units(d).is_empty());
    assert!(env.exists());
}

#[test]
fn units_verify_and_calendars_parse() {
    let dest = installed();
    // systemd-analyze verify checks ExecStart on the real root: point the
    // installed units at the DESTDIR copy of the programs.
    let check = tempfile::tempdir().unwrap();
    let prefix = dest.path().join("usr/local");
    let mut names = vec![];
    for u in units(dest.path()) {
        let text = std::fs::read_to_string(&u)
            .unwrap()
            .replace("/usr/local/", &format!("{}/", prefix.display()));
        let name = u.file_name().unwrap().to_owned();
        std::fs::write(check.path().join(&name), text).unwrap();
        names.push(name);
    }
    assert_eq!(names.len(), 13, "{names:?}");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&names)
        .current_dir(check.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify:\n{stderr}"
    );

    let mut calendars = 0;
    for u in units(dest.path()) {
        let text = std::fs::read_to_string(&u).unwrap();
        for cal in directives(&text, "OnCalendar") {
            let out = Command::new("systemd-analyze")
                .args(["calendar", cal])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}: OnCalendar={cal}: {}",
                u.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            calendars += 1;
        }
        if u.extension().is_some_and(|e| e == "timer") {
            assert!(text.contains("WantedBy=timers.target"), "{}", u.display());
        }
        if u.extension().is_some_and(|e| e == "service") && !u.to_string_lossy().contains("notify@")
        {
            let tail = &text;
            let is_health = u.to_string_lossy().contains("health");
            assert!(
                is_health || tail.contains("OnFailure=opskit-notify@%n.service"),
                "{} does not page on failure",
                u.display()
            );
            assert!(
                tail.contains("EnvironmentFile=/etc/opskit/opskit.env"),
                "{}",
                u.display()
            );
        }
    }
    assert_eq!(calendars, 6);
}

/// systemd gives a unit's `StateDirectory=` to the unit's user as it
/// starts (chown -R). A directory two users' units share changes hands:
/// what the opskit user wrote there became root's when the root
/// logrotate unit started, and logrotate-lite replayed a journal from it
/// (run as root: its compress commands, its renames). Every directory is
/// one user's.
#[test]
fn no_state_directory_changes_hands_between_users() {
    let mut owner: std::collections::BTreeMap<String, (String, PathBuf)> = Default::default();
    for e in std::fs::read_dir(repo().join("systemd")).unwrap().flatten() {
        let p = e.path();
        let text = std::fs::read_to_string(&p).unwrap();
        let user = directives(&text, "User")
            .last()
            .unwrap_or(&"root")
            .to_string();
        for dirs in directives(&text, "StateDirectory") {
            for d in dirs.split_whitespace() {
                let had = owner.insert(d.to_string(), (user.clone(), p.clone()));
                if let Some((other, unit)) = had {
                    assert_eq!(
                        other,
                        user,
                        "/var/lib/{d} is the StateDirectory of {} ({other}) and {} ({user})",
                        unit.display(),
                        p.display()
                    );
                }
            }
        }
    }
    assert_eq!(owner["opskit-logrotate"].0, "root");
}

#[test]
fn every_service_is_hardened_to_ok_exposure() {
    let dir = repo().join("systemd");
    let mut scored = 0;
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "service") {
            continue;
        }
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true"])
            .arg(&p)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.contains("Overall exposure level"))
            .unwrap_or_else(|| {
                panic!(
                    "no score for {}: {text}{}",
                    p.display(),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        let score: f64 = line
            .split(": ")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            score <= 2.5,
            "{}: exposure {score} > 2.5\n{text}",
            p.display()
        );
        scored += 1;
    }
    assert_eq!(scored, 7);
}

#[test]
fn alert_rules_pass_their_promtool_tests() {
    let dir = repo().join("monitoring");
    for args in [
        vec!["check", "rules", "opskit.rules.yml"],
        vec!["test", "rules", "opskit.rules.test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian's prometheus package; make test installs it)");
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_failure_notifier_sends_the_unit_and_its_journal() {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let mut r = BufReader::new(s);
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        r.get_mut()
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        String::from_utf8(body).unwrap()
    });
    let env = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        env.path(),
        format!("OPSKIT_NOTIFY_URL=http://127.0.0.1:{port}/services/T0/B0/T0kenCanary77\n"),
    )
    .unwrap();
    let tools = bin("healthcheck");
    let out = run(Command::new(repo().join("scripts/notify-failure.sh"))
        .arg("opskit-backup.service")
        .env("OPSKIT_ENV", env.path())
        .env("OPSKIT_BIN", tools.parent().unwrap()));
    assert_eq!(out.code, 0, "{}", out.stderr);
    let msg: serde_json::Value = serde_json::from_str(&server.join().unwrap()).unwrap();
    assert!(
        msg["text"]
            .as_str()
            .unwrap()
            .contains("opskit-backup.service"),
        "{msg}"
    );
    assert_eq!(msg["source"], "opskit-healthcheck");
    // The journal is told the host, not the webhook's token (its path).
    assert!(
        out.stderr
            .contains(&format!("told http://127.0.0.1:{port} that")),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("T0kenCanary77"), "{}", out.stderr);
}

#[test]
fn the_minute_timer_writes_the_health_textfile() {
    let d = tempfile::tempdir().unwrap();
    let checks = d.path().join("checks.ndjson");
    std::fs::write(&checks, format!("{{\"name\":\"root\",\"target\":\"disk:{}\",\"warn\":\"free_pct < 0\",\"crit\":\"free_pct < 0\"}}\n{{\"name\":\"nothing\",\"target\":\"tcp://127.0.0.1:1\"}}\n", d.path().display())).unwrap();
    let env = d.path().join("opskit.env");
    std::fs::write(
        &env,
        format!(
            "OPSKIT_CHECKS={}\nOPSKIT_METRICS_DIR={}/metrics\nOPSKIT_STATE_DIR={}/state\n",
            checks.display(),
            d.path().display(),
            d.path().display()
        ),
    )
    .unwrap();
    let tools = bin("healthcheck");
    let out = run(Command::new(repo().join("scripts/health-report.sh"))
        .env("OPSKIT_ENV", &env)
        .env("OPSKIT_BIN", tools.parent().unwrap()));
    assert_eq!(
        out.code, 2,
        "the refused TCP check is CRITICAL: {}",
        out.stderr
    );
    let text = std::fs::read_to_string(d.path().join("metrics/opskit_health.prom")).unwrap();
    assert!(
        text.contains("opskit_check_status{check=\"root\",kind=\"disk\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("opskit_check_status{check=\"nothing\",kind=\"tcp\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("opskit_healthcheck_last_run_timestamp_seconds "),
        "{text}"
    );
}
