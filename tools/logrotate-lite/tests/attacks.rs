//! A hostile log directory: the application's user owns it, and
//! logrotate-lite runs as root. A symlink swapped in under a rotation or
//! planted where a file is created, read, shredded or moved to, a lock or
//! journal that is a link, a journal someone else wrote, log names that
//! are shell code: none may make root truncate, chown, chmod, overwrite,
//! read or run anything outside the log directory.

mod hostile;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hostile::{SECRET, Victim, flipper, lite, planter, put_regular, run};

/// How many rotations each race runs.
const ROUNDS: usize = 200;

/// A log directory with one log, a config for it (`{LOG}` in `conf`
/// stands for the log's path), a state file, and a victim beside it.
struct Site {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    logs: PathBuf,
    log: PathBuf,
    conf: PathBuf,
    state: PathBuf,
    victim: Victim,
}

fn site(conf: &str) -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let logs = root.join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, "app line\n").unwrap();
    let conf_path = root.join("rotate.conf");
    let text = conf
        .replace("{LOG}", &log.display().to_string())
        .replace("{D}", &logs.display().to_string());
    std::fs::write(&conf_path, text).unwrap();
    Site {
        victim: Victim::new(&root),
        state: root.join("status"),
        conf: conf_path,
        _tmp: tmp,
        root,
        logs,
        log,
    }
}

impl Site {
    /// One forced rotation; it may fail, it may not crash.
    fn rotate(&self) -> hostile::Ran {
        let ran = run(lite().arg("-f").arg("-s").arg(&self.state).arg(&self.conf));
        assert!(
            matches!(ran.code, Some(0 | 1)),
            "exit {:?}: {}",
            ran.code,
            ran.stderr
        );
        ran
    }

    /// Every regular file in the log directory, decompressed when gzip.
    fn contents(&self) -> Vec<(String, String)> {
        let mut out = vec![];
        for e in std::fs::read_dir(&self.logs).unwrap().flatten() {
            let p = e.path();
            if !e.file_type().unwrap().is_file() {
                continue;
            }
            let raw = std::fs::read(&p).unwrap();
            let text = if raw.starts_with(&[0x1f, 0x8b]) {
                let mut s = String::new();
                let mut d = flate2::read::MultiGzDecoder::new(&raw[..]);
                std::io::Read::read_to_string(&mut d, &mut s).unwrap_or_default();
                s
            } else {
                String::from_utf8_lossy(&raw).into_owned()
            };
            out.push((p.display().to_string(), text));
        }
        out
    }

    /// No file in the log directory holds the victim's secret.
    fn assert_nothing_read_through(&self) {
        for (name, text) in self.contents() {
            assert!(
                !text.contains(SECRET.trim()),
                "{name} holds the victim's content: it was read through a symlink"
            );
        }
    }
}

/// Attack 1: copytruncate checks the log, then opens and truncates it;
/// a log swapped for a symlink in between must not truncate the victim.
#[test]
fn copytruncate_never_truncates_through_a_swapped_symlink() {
    let s = site("{LOG} {\n rotate 1\n copytruncate\n missingok\n}\n");
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = flipper(s.log.clone(), s.victim.path.clone(), Arc::clone(&stop));
    for round in 0..ROUNDS {
        s.rotate();
        s.victim
            .assert_intact(&format!("copytruncate round {round}"));
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    assert!(
        swaps > ROUNDS as u64,
        "the attacker swapped only {swaps} times"
    );
    s.assert_nothing_read_through();
}

/// Attack 2: `create 0666 nobody nogroup` after the rename; a symlink
/// planted under the log's name in between is never chowned/chmodded
/// through: that log's creation is refused in one line naming the file,
/// and the other logs still rotate.
#[test]
fn create_never_chowns_or_chmods_through_a_planted_symlink() {
    let s = site(
        "{LOG} {\n rotate 1\n create 0666 nobody nogroup\n}\n{D}/b.log {\n rotate 1\n create\n}\n",
    );
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = planter(s.log.clone(), s.victim.path.clone(), Arc::clone(&stop));
    let mut refused = 0;
    for round in 0..ROUNDS {
        put_regular(&s.log, "app line\n");
        std::fs::write(s.logs.join("b.log"), "b\n").unwrap();
        let ran = s.rotate();
        s.victim.assert_intact(&format!("create round {round}"));
        assert!(
            ran.summary()["rotated"].as_u64() >= Some(1),
            "{}",
            ran.stdout
        );
        if ran.stdout.contains("already exists") {
            refused += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let planted = attacker.join().unwrap();
    eprintln!("{planted} symlinks planted, {refused} creations refused in {ROUNDS} rounds");
    assert!(planted > 0, "the attacker never planted a symlink");
}

/// Attack 3: the state file's lock and journal are never opened through
/// a symlink; the refusal is one line naming the file.
#[test]
fn a_symlinked_lock_or_journal_is_refused() {
    for which in ["status.lock", "status.opskit-journal"] {
        let s = site("{LOG} {\n rotate 1\n}\n");
        let link = s.root.join(which);
        symlink(&s.victim.path, &link).unwrap();
        let ran = run(lite().arg("-f").arg("-s").arg(&s.state).arg(&s.conf));
        s.victim.assert_intact(which);
        assert_eq!(ran.code, Some(2), "{which}: {}{}", ran.stdout, ran.stderr);
        let line = ran.stderr.lines().find(|l| l.contains("symbolic link"));
        assert!(
            line.is_some_and(|l| l.contains(&link.display().to_string())),
            "{which}: {}",
            ran.stderr
        );
        assert!(
            !s.logs.join("app.log.1").exists(),
            "{which}: rotated anyway"
        );
    }
}

/// Attack 3: a journal is replayed (its commands run, its paths renamed
/// and removed) only when root or the running user wrote it and nobody
/// else can write it.
#[test]
fn a_journal_someone_else_could_write_is_not_replayed() {
    for (uid, mode) in [(65534, 0o600), (0, 0o666)] {
        let s = site("{LOG} {\n rotate 1\n}\n");
        let src = s.logs.join("app.log.1");
        std::fs::write(&src, "old\n").unwrap();
        let pwned = s.root.join("PWNED");
        let plan = serde_json::json!({
            "at": "2026-01-01T00:00:00",
            "plan": {
                "log": s.log,
                "main": [{"Compress": {
                    "src": src,
                    "dst": s.logs.join("app.log.1.gz"),
                    "level": 6,
                    "command": ["/bin/sh", "-c", format!("touch {}", pwned.display())],
                }}],
                "after": [], "warnings": [], "blocked": null,
            }
        });
        let journal = s.root.join("status.opskit-journal");
        std::fs::write(&journal, format!("{plan}\n")).unwrap();
        std::os::unix::fs::chown(&journal, Some(uid), Some(uid)).unwrap();
        std::fs::set_permissions(&journal, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .unwrap();
        let ran = run(lite().arg("-f").arg("-s").arg(&s.state).arg(&s.conf));
        assert!(
            !pwned.exists(),
            "uid {uid} mode {mode:o}: the journal's command ran"
        );
        assert_eq!(ran.code, Some(2), "{}{}", ran.stdout, ran.stderr);
        assert!(
            ran.stderr.contains(&journal.display().to_string()),
            "{}",
            ran.stderr
        );
    }
}

/// A journal root owns, 0600, that root did not write: systemd gives a
/// `StateDirectory=` two units share to each unit's user as it starts
/// (chown -R), so a journal the opskit user wrote became root's before
/// the logrotate unit ran. Its plans are carried out only as far as the
/// configuration vouches for them: a command that is not the block's, a
/// step outside the log's directory, or a log no block names, is not
/// run, and the log is rotated as usual.
#[test]
fn a_root_owned_journal_runs_only_what_the_configuration_says() {
    let s = site("{D}/*.log {\n rotate 1\n compress\n notifempty\n}\n");
    let b = s.logs.join("b.log");
    std::fs::write(&b, "b line\n").unwrap();
    let outside = s.root.join("outside");
    std::fs::write(&outside, "keep me\n").unwrap();
    let pwned = s.root.join("PWNED");
    let src = s.logs.join("app.log.1");
    std::fs::write(&src, "old\n").unwrap();
    // Files of the log directory that are not a log's rotations.
    let keep = s.logs.join("keep.log");
    std::fs::write(&keep, "").unwrap(); // empty: not rotated
    let config = s.logs.join("settings.ini");
    std::fs::write(&config, "keep\n").unwrap();
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&p.metadata().unwrap().permissions()) & 0o7777
    };
    let keep_mode = mode(&keep);
    let plan = |log: &Path, main: serde_json::Value| {
        serde_json::json!({
            "at": "2026-01-01T00:00:00",
            "plan": {"log": log, "main": main, "after": [], "warnings": [], "blocked": null}
        })
    };
    let lines = [
        plan(
            &s.log,
            serde_json::json!([{"Compress": {
                "src": src,
                "dst": s.logs.join("app.log.1.gz"),
                "level": 6,
                "command": ["/bin/sh", "-c", format!("touch {}", pwned.display())],
            }}]),
        ),
        plan(
            &b,
            serde_json::json!([{"Remove": {"path": outside, "why": "old"}}]),
        ),
        plan(
            &s.root.join("other.log"),
            serde_json::json!([{"Remove": {"path": s.root.join("other.log.1"), "why": "old"}}]),
        ),
        // A block without `create`, a setuid world-writable root's log.
        plan(
            &keep,
            serde_json::json!([{"Create": {"path": keep, "mode": 0o6777, "owner": "0", "group": "0"}}]),
        ),
        // A rotation step on a file of the directory that is not the log's.
        plan(
            &s.logs.join("c.log"),
            serde_json::json!([{"Remove": {"path": config, "why": "old"}}]),
        ),
        // `..` in the log's path.
        plan(
            &s.logs.join("../logs/d.log"),
            serde_json::json!([{"Remove": {"path": s.logs.join("d.log.1"), "why": "old"}}]),
        ),
    ];
    let journal = s.root.join("status.opskit-journal");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&journal, text).unwrap();
    std::fs::set_permissions(
        &journal,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let ran = run(lite().arg("-f").arg("-s").arg(&s.state).arg(&s.conf));
    assert!(!pwned.exists(), "the journal's command ran\n{}", ran.stderr);
    assert!(
        outside.exists(),
        "a file outside the log's directory was removed"
    );
    assert!(config.exists(), "a file not the log's was removed");
    assert_eq!(
        mode(&keep),
        keep_mode,
        "a mode from the journal was applied"
    );
    for why in [
        "a step runs a compress command that is not its compresscmd",
        &format!("a step names {}, not a rotation of", outside.display()),
        "its log is in no block of the configuration",
        "a step creates a log without create",
        &format!("a step names {}, not a rotation of", config.display()),
        "has a . or .. in it",
    ] {
        assert!(ran.stderr.contains(why), "{why}: {}", ran.stderr);
    }
    // Rotated as usual, by the configuration.
    assert!(s.logs.join("app.log.1.gz").exists(), "{}", ran.stderr);
}

/// Attack 3: a log's name reaches a script only as `$1`, never inside
/// the script's text, in every kind of script.
#[test]
fn a_log_name_reaches_scripts_only_as_an_argument() {
    let s = site("");
    let name = "a$(touch PWNED).log";
    let log = s.logs.join(name);
    std::fs::write(&log, "x\n").unwrap();
    std::fs::write(s.logs.join(format!("{name}.2")), "old\n").unwrap();
    let out = s.root.join("args");
    let script = |k: &str| {
        format!(
            " {k}\n  printf '%s\\n' \"{k} $1\" >> {}\n endscript\n",
            out.display()
        )
    };
    let conf = format!(
        "{}/*.log {{\n rotate 1\n{}{}{}{}{}}}\n",
        s.logs.display(),
        script("firstaction"),
        script("prerotate"),
        script("postrotate"),
        script("preremove"),
        script("lastaction"),
    );
    std::fs::write(&s.conf, conf).unwrap();
    let ran = run(lite()
        .current_dir(&s.logs)
        .arg("-f")
        .arg("-s")
        .arg(&s.state)
        .arg(&s.conf));
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    for dir in [&s.root, &s.logs] {
        assert!(!dir.join("PWNED").exists(), "a log name ran as shell code");
    }
    let args = std::fs::read_to_string(&out).unwrap();
    for k in ["prerotate", "postrotate"] {
        assert!(
            args.contains(&format!("{k} {}", log.display())),
            "{k} did not get the name as $1: {args}"
        );
    }
    assert!(
        args.contains(&format!("preremove {}.2", log.display())),
        "{args}"
    );
}

/// Attack 3: the logs of a one-off run (`--rotate N DIR/*.log`, the
/// shell's glob of a directory the user owns) are names, never config
/// text: a name with newlines and quotes cannot add a block or a script.
#[test]
fn one_off_log_names_are_never_read_as_config() {
    let s = site("");
    let evil = "a'\n*.log {\n postrotate\n  touch PWNED\n endscript\n}\n'b.log";
    std::fs::write(s.logs.join(evil), "x\n").unwrap();
    std::fs::write(s.logs.join("c[ab].log"), "c\n").unwrap();
    std::fs::write(s.logs.join("ca.log"), "not given\n").unwrap();
    let ran = run(lite()
        .current_dir(&s.logs)
        .arg("-s")
        .arg(&s.state)
        .args(["--rotate", "1"])
        .arg(s.logs.join(evil))
        .arg(s.logs.join("c[ab].log")));
    assert!(!s.logs.join("PWNED").exists(), "a log name became a script");
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert!(s.logs.join(format!("{evil}.1")).exists(), "{}", ran.stdout);
    assert!(s.logs.join("c[ab].log.1").exists(), "{}", ran.stdout);
    assert!(
        !s.logs.join("ca.log.1").exists(),
        "a name was read as a glob"
    );
    assert!(s.log.exists() && !s.logs.join("app.log.1").exists());
}

/// Attack 4: compression never reads through a symlink planted as a
/// rotation (delaycompress compresses `.1` on the next run).
#[test]
fn compression_never_reads_through_a_planted_symlink() {
    let s = site("{LOG} {\n rotate 3\n compress\n delaycompress\n}\n");
    symlink(&s.victim.path, s.logs.join("app.log.1")).unwrap();
    let ran = s.rotate();
    s.victim.assert_intact("compress");
    s.assert_nothing_read_through();
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("symbolic link"), "{}", ran.stdout);
}

/// Attack 4: a FIFO planted as a rotation is refused, not waited on.
#[test]
fn a_fifo_planted_as_a_rotation_does_not_hang_compression() {
    let s = site("{LOG} {\n rotate 3\n compress\n delaycompress\n}\n");
    let fifo = s.logs.join("app.log.1");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let ran = s.rotate();
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains("a FIFO"), "{}", ran.stdout);
}

/// Attack 4: `shred` never overwrites through a symlink planted as the
/// rotation it removes: the link alone is removed.
#[test]
fn shred_never_overwrites_through_a_planted_symlink() {
    let s = site("{LOG} {\n rotate 1\n shred\n}\n");
    symlink(&s.victim.path, s.logs.join("app.log.2")).unwrap();
    s.rotate();
    s.victim.assert_intact("shred");
    assert!(
        s.logs.join("app.log.2").symlink_metadata().is_err(),
        "link kept"
    );
}

/// Attack 4: an olddir that is a symlink planted in the log directory is
/// not followed: nothing lands in (or is created under) its target.
#[test]
fn a_planted_olddir_symlink_is_not_followed() {
    for extra in ["", " createolddir 0777 nobody nogroup\n"] {
        let s = site(&format!("{{LOG}} {{\n rotate 1\n olddir old\n{extra}}}\n"));
        let target = s.root.join("rootdir");
        std::fs::create_dir(&target).unwrap();
        symlink(&target, s.logs.join("old")).unwrap();
        let ran = s.rotate();
        assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
        assert_eq!(
            std::fs::read_dir(&target).unwrap().count(),
            0,
            "{extra}: a file landed in the symlink's target"
        );
        assert!(ran.stdout.contains("symbolic link"), "{}", ran.stdout);
        assert!(s.log.exists(), "the log stays when its rotation is refused");
        assert_dir_untouched(&target);
    }
}

fn assert_dir_untouched(p: &Path) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    assert_eq!((m.uid(), m.gid()), (0, 0), "{} was chowned", p.display());
}
