//! Faults: logrotate-lite killed (SIGKILL) at many points of a rotation,
//! a writer appending as fast as it can while logs rotate, a corrupt
//! state file.

mod twin;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use twin::tree;

fn lite() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_logrotate-lite"));
    c.env_remove("OPSKIT_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// 40 logs with two older rotations each, all due (daily, last rotated
/// two days ago).
fn setup(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let logs = root.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut state = String::from("logrotate state -- version 2\n");
    let day = chrono::Local::now().naive_local() - chrono::Duration::days(2);
    for i in 0..40 {
        let name = format!("app{i:02}.log");
        let body: String = (0..400)
            .map(|n| format!("{name} line {n} {}\n", "x".repeat(40)))
            .collect();
        std::fs::write(logs.join(&name), body).unwrap();
        for (k, tag) in [(1, "one"), (2, "two")] {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(format!("{name} rotated {tag}\n").as_bytes())
                .unwrap();
            std::fs::write(logs.join(format!("{name}.{k}.gz")), enc.finish().unwrap()).unwrap();
        }
        state.push_str(&format!(
            "\"{}\" {}\n",
            logs.join(&name).display(),
            day.format("%Y-%-m-%-d-%-H:%-M:%-S")
        ));
    }
    let conf = root.join("conf");
    std::fs::write(
        &conf,
        format!(
            "{}/*.log {{\n daily\n rotate 3\n compress\n create\n}}\n",
            logs.display()
        ),
    )
    .unwrap();
    let st = root.join("status");
    std::fs::write(&st, state).unwrap();
    (logs, conf, st)
}

#[test]
fn killed_anywhere_the_next_run_converges_to_one_clean_run() {
    let clean = tempfile::tempdir().unwrap();
    let (logs, conf, st) = setup(clean.path());
    let t = Instant::now();
    let out = lite().arg("-s").arg(&st).arg(&conf).output().unwrap();
    let clean_time = t.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = tree(&logs);
    assert_eq!(
        expected.len(),
        40 * 4,
        "{:?}",
        expected.keys().take(8).collect::<Vec<_>>()
    );

    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut interrupted = 0;
    for round in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let (logs, conf, st) = setup(dir.path());
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = Duration::from_micros(seed % (clean_time.as_micros() as u64 + 2000));
        let mut child = lite().arg("-s").arg(&st).arg(&conf).spawn().unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            interrupted += 1;
        }
        let out = lite().arg("-s").arg(&st).arg(&conf).output().unwrap();
        assert!(
            out.status.success(),
            "round {round} (killed after {delay:?}): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = tree(&logs);
        if got != expected {
            let diff: Vec<_> = expected
                .keys()
                .chain(got.keys())
                .filter(|k| expected.get(*k) != got.get(*k))
                .take(6)
                .collect();
            panic!(
                "round {round}: killed after {delay:?}, the rerun left a different tree; differing: {diff:?}"
            );
        }
    }
    assert!(
        interrupted >= 10,
        "only {interrupted} of 40 runs were interrupted: the kill points are too late"
    );
}

/// A writer appending numbered lines as fast as it can; on `reopen` it
/// opens the path again (as a daemon does on SIGHUP).
fn writer(
    path: PathBuf,
    stop: Arc<AtomicBool>,
    reopen: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap()
        };
        let mut f = open();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if reopen.swap(false, Ordering::SeqCst) {
                f = open();
            }
            f.write_all(format!("line {n:09} {}\n", "y".repeat(60)).as_bytes())
                .unwrap();
            n += 1;
        }
        n
    })
}

/// Forced rotations, `pause` apart, each of which must succeed.
fn rotate_every(
    tool: &dyn Fn() -> Command,
    state: &Path,
    conf: &Path,
    rounds: usize,
    pause: Duration,
) {
    for _ in 0..rounds {
        std::thread::sleep(pause);
        let out = tool()
            .arg("-f")
            .arg("-s")
            .arg(state)
            .arg(conf)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Numbers written that are missing, and numbers found twice, across the
/// log and all its rotations.
fn audit(dir: &Path, written: u64) -> (u64, u64) {
    let mut seen = vec![0u8; written as usize];
    for (_, (_, content)) in tree(dir) {
        for l in content.lines() {
            if let Some(n) = l
                .strip_prefix("line ")
                .and_then(|r| r.get(..9))
                .and_then(|d| d.parse::<usize>().ok())
            {
                seen[n] = seen[n].saturating_add(1);
            }
        }
    }
    let lost = seen.iter().filter(|c| **c == 0).count() as u64;
    let dup = seen.iter().filter(|c| **c > 1).count() as u64;
    (lost, dup)
}

#[test]
fn create_mode_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("app.log");
    let flag = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&flag)).unwrap();
    let conf = dir.path().join("conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n rotate 100\n create\n postrotate\n  kill -HUP {}\n endscript\n}}\n",
            log.display(),
            std::process::id()
        ),
    )
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(log.clone(), Arc::clone(&stop), Arc::clone(&flag));
    rotate_every(
        &lite,
        &dir.path().join("status"),
        &conf,
        15,
        Duration::from_millis(40),
    );
    std::thread::sleep(Duration::from_millis(40));
    stop.store(true, Ordering::Relaxed);
    let written = w.join().unwrap();
    let (lost, dup) = audit(&logs, written);
    assert!(written > 10_000, "the writer wrote only {written} lines");
    assert_eq!(
        (lost, dup),
        (0, 0),
        "of {written} lines: {lost} lost, {dup} duplicated"
    );
    assert_eq!(std::fs::read_dir(&logs).unwrap().count(), 16);
}

/// copytruncate under the same writer with each tool: count the lines lost.
fn copytruncate_losses(tool: &dyn Fn() -> Command, rounds: usize) -> (u64, u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let log = logs.join("app.log");
    std::fs::write(&log, "").unwrap();
    let conf = dir.path().join("conf");
    std::fs::write(
        &conf,
        format!("{} {{\n rotate 100\n copytruncate\n}}\n", log.display()),
    )
    .unwrap();
    let state = dir.path().join("status");
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(
        log.clone(),
        Arc::clone(&stop),
        Arc::new(AtomicBool::new(false)),
    );
    rotate_every(tool, &state, &conf, rounds, Duration::from_millis(30));
    stop.store(true, Ordering::Relaxed);
    let written = w.join().unwrap();
    let (lost, dup) = audit(&logs, written);
    (lost, dup, written)
}

#[test]
fn copytruncate_loses_fewer_lines_than_logrotate() {
    let ours = copytruncate_losses(&lite, 20);
    let theirs = copytruncate_losses(
        &|| {
            let mut c = Command::new("/usr/sbin/logrotate");
            c.stdout(Stdio::null()).stderr(Stdio::piped());
            c
        },
        20,
    );
    eprintln!(
        "copytruncate, 20 rotations under a fast writer: logrotate-lite lost {} of {} lines, logrotate lost {} of {}",
        ours.0, ours.2, theirs.0, theirs.2
    );
    assert_eq!(ours.1, 0, "duplicated lines");
    assert!(
        ours.0 < theirs.0,
        "logrotate-lite lost {} lines, logrotate {}",
        ours.0,
        theirs.0
    );
}

#[test]
fn a_corrupt_state_line_is_named_and_the_rest_still_decides() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::fs::write(logs.join("a.log"), "a\n").unwrap();
    std::fs::write(logs.join("b.log"), "b\n").unwrap();
    let state = dir.path().join("status");
    let old = (chrono::Local::now().naive_local() - chrono::Duration::days(3))
        .format("%Y-%-m-%-d-%-H:%-M:%-S");
    std::fs::write(
        &state,
        format!(
            "logrotate state -- version 2\n\"{0}/a.log\" {old}\ngarbage\n\"{0}/b.log\" {old}\n",
            logs.display()
        ),
    )
    .unwrap();
    let conf = dir.path().join("conf");
    std::fs::write(
        &conf,
        format!("{}/*.log {{\n daily\n rotate 2\n}}\n", logs.display()),
    )
    .unwrap();
    let mut c = lite();
    let out = c
        .stdout(Stdio::piped())
        .arg("-s")
        .arg(&state)
        .arg(&conf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("{}:3: cannot read: garbage", state.display())),
        "{stdout}"
    );
    // logrotate stops reading at the bad line (b.log would be "new" and
    // wait a day); logrotate-lite still rotates both.
    assert!(logs.join("a.log.1").exists() && logs.join("b.log.1").exists());
}
