//! A set's globals restored on a server that already has roles: only the
//! roles that do not exist are made. `pg_dumpall --globals-only` writes, for
//! every role, `CREATE ROLE r;` and then `ALTER ROLE r WITH … PASSWORD …`,
//! `ALTER ROLE r SET …`, `COMMENT ON ROLE r`, `GRANT x TO r`: run as they
//! are, the CREATE fails for an existing role but everything after it
//! resets that live role to the set's state (an old password, old
//! privileges). Those statements are left out for roles the server has.

use std::collections::BTreeSet;
use std::io::{self, BufRead, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The longest statement line read (a role's line is short).
const MAX_LINE: usize = 1 << 20;

/// The role a globals statement is about, if it is one of
/// `CREATE ROLE r`, `ALTER ROLE r`, `COMMENT ON ROLE r`, `GRANT … TO r`,
/// `SECURITY LABEL … ON ROLE r`.
fn role_of(line: &str) -> Option<String> {
    let rest = line
        .strip_prefix("CREATE ROLE ")
        .or_else(|| line.strip_prefix("ALTER ROLE "))
        .or_else(|| line.strip_prefix("COMMENT ON ROLE "))
        .or_else(|| {
            line.split_once(" ON ROLE ")
                .map(|(_, r)| r)
                .filter(|_| line.starts_with("SECURITY LABEL"))
        })
        .or_else(|| {
            line.strip_prefix("GRANT ")
                .and_then(|g| g.split_once(" TO ").map(|(_, r)| r))
        })?;
    ident(rest)
}

/// The identifier at the start of `s`: `"quoted ""name"""` or a bare one.
fn ident(s: &str) -> Option<String> {
    if let Some(q) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            if c == '"' {
                match chars.clone().next() {
                    Some('"') => {
                        chars.next();
                        out.push('"');
                    }
                    _ => return Some(out),
                }
            } else {
                out.push(c);
            }
        }
        return None;
    }
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
        .unwrap_or(s.len());
    (end > 0).then(|| s[..end].to_string())
}

/// A reader of globals SQL without the lines about roles in `existing`.
pub struct SkipExisting<R> {
    inner: R,
    existing: BTreeSet<String>,
    line: Vec<u8>,
    pos: usize,
    /// How many statements were left out.
    pub skipped: Arc<AtomicUsize>,
}

impl<R: BufRead> SkipExisting<R> {
    pub fn new(inner: R, existing: BTreeSet<String>) -> Self {
        SkipExisting {
            inner,
            existing,
            line: Vec::new(),
            pos: 0,
            skipped: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<R: BufRead> Read for SkipExisting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.line.len() {
            self.line.clear();
            self.pos = 0;
            let n = (&mut self.inner)
                .take(MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return Ok(0);
            }
            if self.line.len() > MAX_LINE {
                return Err(io::Error::other(
                    "a line of the globals is longer than 1 MiB: refused",
                ));
            }
            let text = String::from_utf8_lossy(&self.line);
            if role_of(&text).is_some_and(|r| self.existing.contains(&r)) {
                self.skipped.fetch_add(1, Ordering::Relaxed);
                self.line.clear();
            }
        }
        let n = (self.line.len() - self.pos).min(buf.len());
        buf[..n].copy_from_slice(&self.line[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_about_existing_roles_are_left_out() {
        let sql = "CREATE ROLE app;\nALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-old';\n\
                   CREATE ROLE \"New \"\"Role\"\"\";\nALTER ROLE \"New \"\"Role\"\"\" WITH NOLOGIN;\n\
                   ALTER ROLE app SET search_path TO evil;\nGRANT pg_execute_server_program TO app GRANTED BY postgres;\n\
                   COMMENT ON ROLE app IS 'x';\nGRANT reader TO \"New \"\"Role\"\"\";\nSELECT 1;\n";
        let existing: BTreeSet<String> = ["app".to_string()].into();
        let mut r = SkipExisting::new(sql.as_bytes(), existing);
        let mut out = String::new();
        r.read_to_string(&mut out).unwrap();
        assert_eq!(
            out,
            "CREATE ROLE \"New \"\"Role\"\"\";\nALTER ROLE \"New \"\"Role\"\"\" WITH NOLOGIN;\n\
             GRANT reader TO \"New \"\"Role\"\"\";\nSELECT 1;\n"
        );
        assert_eq!(r.skipped.load(Ordering::Relaxed), 5);
    }
}
