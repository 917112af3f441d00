//! The shell procedures of `scripts/` run hermetically: nothing of the
//! caller's environment, a timeout, env files written the way operators
//! write them, and stub tools that record what they were given.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::tools::{Output, run};

/// The checkout.
pub fn repo() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .unwrap()
}

/// The procedures under test: the checkout's `scripts/`, or
/// `OPSKIT_TEST_SCRIPTS=DIR` (an older checkout's, to see an attack
/// succeed there).
pub fn scripts() -> PathBuf {
    std::env::var_os("OPSKIT_TEST_SCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("scripts"))
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The PATH of a hermetic run.
pub const PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

/// The few variables a shell needs, in `cwd`; nothing of the caller's
/// environment.
pub fn hermetic(cmd: &mut Command, cwd: &Path) {
    cmd.env_clear()
        .env("PATH", PATH)
        .env("LANG", "C.UTF-8")
        .current_dir(cwd);
}

/// `script` run by bash after `set -euo pipefail; source common.sh`, as
/// the procedures start, with `OPSKIT_ENV=env_file` and `preset` in the
/// environment, killed after `secs` seconds. `$@` holds `args`.
pub fn bash(
    cwd: &Path,
    env_file: &Path,
    preset: &[(&str, &str)],
    secs: u32,
    script: &str,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new("timeout");
    hermetic(&mut cmd, cwd);
    cmd.args(["-s", "KILL", &secs.to_string(), "bash", "-c"])
        .arg(format!(
            "set -euo pipefail\nsource {}/lib/common.sh\n{script}",
            scripts().display()
        ))
        .arg("bash")
        .args(args)
        .env("OPSKIT_ENV", env_file);
    for (k, v) in preset {
        cmd.env(k, v);
    }
    run(&mut cmd)
}

/// `script` sourced as by [`bash`] with no env file (`/dev/null`) and
/// `preset` in the environment; killed after 30 s.
pub fn source(cwd: &Path, preset: &[(&str, &str)], script: &str) -> Output {
    bash(cwd, Path::new("/dev/null"), preset, 30, script, &[])
}

/// A procedure of `scripts/` run with the env file `env_file` and the
/// tools in `bin` (`OPSKIT_BIN`); killed after 60 s.
pub fn procedure(cwd: &Path, env_file: &Path, bin: &Path, name: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new("timeout");
    hermetic(&mut cmd, cwd);
    cmd.args(["-s", "KILL", "60"])
        .arg(scripts().join(name))
        .args(args)
        .env("OPSKIT_ENV", env_file)
        .env("OPSKIT_BIN", bin);
    run(&mut cmd)
}

/// An env file's text: each value double-quoted, as operators write them
/// and as systemd and `opskit_load_env` read them.
pub fn env_text<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut text = String::from("# written by the test\n");
    for (k, v) in vars {
        let q = v
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
            .replace('`', "\\`");
        text.push_str(&format!("{k}=\"{q}\"\n"));
    }
    text
}

/// An env file (mode 0600) of `vars`.
pub fn env_file<V: AsRef<str>>(path: &Path, vars: &[(&str, V)]) {
    let text = env_text(vars.iter().map(|(k, v)| (*k, v.as_ref())));
    write_mode(path, &text, 0o600);
}

/// Write `text` to `path` with `mode`.
pub fn write_mode(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap();
    set_mode(path, mode);
}

pub fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// A path's permission bits (of a link itself, not its target).
pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A stub tool or program: a bash script, mode 0755.
pub fn stub(dir: &Path, name: &str, body: &str) {
    fs::create_dir_all(dir).unwrap();
    write_mode(&dir.join(name), &format!("#!/bin/bash\n{body}\n"), 0o755);
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A refusal: exit 64 and one line on stderr (`what` names the case).
pub fn refused(out: &Output, what: &str) {
    assert_eq!(
        out.code, 64,
        "{what}: stdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    assert_eq!(
        out.stderr.lines().count(),
        1,
        "{what}: one line on stderr:\n{}",
        out.stderr
    );
}
