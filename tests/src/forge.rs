//! Forging backup sets the way an attacker with write access to a bucket,
//! a backup disk or a postgres-owned root would: change what is in a set,
//! then fix `MANIFEST.json` and `SHA256SUMS` so every checksum agrees. The
//! attacker has no signing key, so the signature no longer matches; with
//! [`crate::signing::resign`] a test plays one who stole it too, to show
//! that the next line of defence holds on its own.

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// sha256 of bytes, by the stock `sha256sum`.
pub fn sha256(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The set's manifest as JSON.
pub fn manifest(set: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(set.join("MANIFEST.json")).unwrap()).unwrap()
}

/// Write `m` as the set's manifest and the SHA256SUMS that agrees with it.
pub fn write_manifest(set: &Path, m: &Value) {
    let text = serde_json::to_string_pretty(m).unwrap() + "\n";
    std::fs::write(set.join("MANIFEST.json"), &text).unwrap();
    let mut sums = String::new();
    for e in m["files"].as_array().unwrap() {
        sums += &format!(
            "{}  {}\n",
            e["sha256"].as_str().unwrap(),
            e["name"].as_str().unwrap()
        );
    }
    sums += &format!("{}  MANIFEST.json\n", sha256(text.as_bytes()));
    std::fs::write(set.join("SHA256SUMS"), sums).unwrap();
}

/// Change the manifest with `edit`, then fix SHA256SUMS.
pub fn edit_manifest(set: &Path, edit: impl FnOnce(&mut Value)) {
    let mut m = manifest(set);
    edit(&mut m);
    write_manifest(set, &m);
}

/// Put `bytes` (already compressed as the name says) in the set as file
/// `name` of `kind`, listed in the manifest with its size and sha256
/// (replacing an entry of that name), mode 0600; SHA256SUMS fixed.
pub fn put_file(set: &Path, name: &str, kind: &str, bytes: &[u8]) {
    let path = set.join(name);
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    edit_manifest(set, |m| {
        let files = m["files"].as_array_mut().unwrap();
        files.retain(|f| f["name"] != name);
        let mut entry = serde_json::json!({
            "name": name, "kind": kind, "bytes": bytes.len(), "sha256": sha256(bytes)
        });
        if name.ends_with(".gz") {
            entry["compression"] = "gzip".into();
        } else if name.ends_with(".zst") {
            entry["compression"] = "zstd".into();
        }
        files.push(entry);
    });
}

/// `bytes` through a stock compressor (`gzip -c`, `zstd -c`…).
pub fn compress(tool: &str, bytes: &[u8]) -> Vec<u8> {
    filter(tool, &["-c"], bytes)
}

/// `bytes` decompressed by a stock tool (`gzip -dc`, `zstd -dc`).
pub fn decompress(tool: &str, bytes: &[u8]) -> Vec<u8> {
    filter(tool, &["-dc"], bytes)
}

fn filter(tool: &str, args: &[&str], bytes: &[u8]) -> Vec<u8> {
    pipe(Command::new(tool).args(args), bytes)
}

/// What `cmd` writes on stdout given `input` on stdin; it must succeed.
pub fn pipe(cmd: &mut Command, input: &[u8]) -> Vec<u8> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{cmd:?} failed");
    out.stdout
}
