//! libpq's password file (`~/.pgpass`, `PGPASSFILE`).

use std::path::Path;

use super::{ConnSpec, Host};

/// Look the password up in a libpq passfile (`host:port:db:user:password`).
pub(super) fn lookup(path: &Path, spec: &ConnSpec) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).ok()?;
    if meta.permissions().mode() & 0o077 != 0 {
        log::warn!(
            "password file {} has group or world access; ignored, as libpq does (chmod 0600 it)",
            path.display()
        );
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let host = match &spec.host {
        Host::Tcp(h) => h.clone(),
        Host::Socket(_) => "localhost".into(),
    };
    let port = spec.port.to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_passfile_line(line);
        if fields.len() != 5 {
            continue;
        }
        let want = [&host, &port, &spec.dbname, &spec.user];
        if fields[..4]
            .iter()
            .zip(want)
            .all(|(f, w)| f == "*" || f == w)
        {
            return Some(fields[4].clone());
        }
    }
    None
}

/// Split on unescaped ':' and unescape `\:` and `\\`.
fn split_passfile_line(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().unwrap().push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            _ => out.last_mut().unwrap().push(c),
        }
    }
    out
}
