//! SQL from a set reaches psql only under `\restrict`.
//!
//! A plain-format dump or a globals file is SQL text that psql runs, and
//! psql's meta-commands run programs (`\!`, `\o |cmd`, `\copy … program`).
//! psql 15.14, 14.19, 13.22, 16.10, 17.6 and every 18 know `\restrict KEY`:
//! after it every meta-command but `\unrestrict KEY` is refused. So the
//! text is fed as
//!
//! ```text
//! \restrict <random key of this run>
//! <the file, without its own \restrict/\unrestrict lines>
//! ```
//!
//! The file cannot lift the restriction: it does not know the key. Its own
//! `\restrict K` line (pg_dump writes one) and the matching `\unrestrict K`
//! are dropped, since psql refuses a second `\restrict` while restricted.
//! An older psql is refused: it would run the meta-commands.

use std::io::{self, BufRead, Read};

/// Whether psql of this version (`15.14`, `18.1`, `17devel`…) knows
/// `\restrict`.
pub fn psql_knows_restrict(version: &str) -> bool {
    let mut parts = version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    match major {
        0..=12 => false,
        13 => minor >= 22,
        14 => minor >= 19,
        15 => minor >= 14,
        16 => minor >= 10,
        17 => minor >= 6,
        _ => true,
    }
}

/// The first line fed to psql, with a fresh random key.
pub fn opening_line() -> String {
    format!("\\restrict {}\n", crate::sys::random_hex(24))
}

/// The longest line start looked at: `\unrestrict ` and a key.
const HEAD: usize = 160;

/// A reader of SQL text that starts with [`opening_line`] and leaves out the
/// text's own `\restrict KEY` lines and the `\unrestrict KEY` lines that
/// match them. Lines of any length stream through without being held.
pub struct Restricted<R> {
    inner: R,
    out: Vec<u8>,
    pos: usize,
    /// At the start of a line (the next bytes decide whether it is dropped).
    at_start: bool,
    keys: Vec<Vec<u8>>,
}

impl<R: BufRead> Restricted<R> {
    pub fn new(inner: R) -> Self {
        Restricted {
            inner,
            out: opening_line().into_bytes(),
            pos: 0,
            at_start: true,
            keys: Vec::new(),
        }
    }

    /// Whether a whole line (with its newline) is one of the file's own
    /// restrict lines.
    fn drop_line(&mut self, line: &[u8]) -> bool {
        let l = line.strip_suffix(b"\n").unwrap_or(line);
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        let key_ok = |k: &[u8]| !k.is_empty() && k.iter().all(u8::is_ascii_alphanumeric);
        if let Some(k) = l.strip_prefix(b"\\restrict ")
            && key_ok(k)
        {
            self.keys.push(k.to_vec());
            return true;
        }
        if let Some(k) = l.strip_prefix(b"\\unrestrict ") {
            return self.keys.iter().any(|have| have == k);
        }
        false
    }

    /// A line that starts with a backslash, gathered into `out` (up to
    /// [`HEAD`] bytes): kept there to be read, or dropped when it is one of
    /// the text's own restrict lines. False at the end of the text.
    fn gather(&mut self) -> io::Result<bool> {
        let mut line = Vec::new();
        while line.len() < HEAD && !line.ends_with(b"\n") {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                break;
            }
            let want = HEAD - line.len();
            let n = match buf.iter().take(want).position(|&b| b == b'\n') {
                Some(i) => i + 1,
                None => buf.len().min(want),
            };
            line.extend_from_slice(&buf[..n]);
            self.inner.consume(n);
        }
        if line.is_empty() {
            return Ok(false);
        }
        self.at_start = line.ends_with(b"\n");
        if !(self.at_start && self.drop_line(&line)) {
            self.out = line;
            self.pos = 0;
        }
        Ok(true)
    }
}

impl<R: BufRead> Read for Restricted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.out.len() {
                let n = (self.out.len() - self.pos).min(buf.len());
                buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            let chunk = self.inner.fill_buf()?;
            if chunk.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            if self.at_start && chunk[0] == b'\\' {
                if !self.gather()? {
                    return Ok(0);
                }
                continue;
            }
            // Everything up to the next line that starts with a backslash
            // goes through as it is, in as large a piece as fits.
            let limit = chunk.len().min(buf.len());
            let n = match memchr::memmem::find(&chunk[..limit], b"\n\\") {
                Some(at) => at + 1,
                None => limit,
            };
            buf[..n].copy_from_slice(&chunk[..n]);
            self.at_start = chunk[n - 1] == b'\n';
            self.inner.consume(n);
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> String {
        let mut s = String::new();
        Restricted::new(io::BufReader::with_capacity(7, input.as_bytes()))
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    #[test]
    fn the_files_own_restrict_lines_go_and_ours_comes_first() {
        let out = run(
            "--\n\\restrict abc123\nSELECT 1;\n\\! id\n\\unrestrict abc123\n\\unrestrict zzz\n",
        );
        let mut lines = out.lines();
        let first = lines.next().unwrap();
        assert!(
            first.starts_with("\\restrict ") && first.len() == 10 + 48,
            "{first}"
        );
        assert_eq!(
            lines.collect::<Vec<_>>(),
            ["--", "SELECT 1;", "\\! id", "\\unrestrict zzz"]
        );
    }

    #[test]
    fn long_lines_and_no_final_newline_pass_unchanged() {
        let long = format!("\\copy {}\nINSERT x", "y".repeat(100_000));
        let out = run(&long);
        assert_eq!(&out[out.find('\n').unwrap() + 1..], long);
    }

    /// Whatever the buffer sizes, the output is the input without its own
    /// restrict lines, after the opening line.
    #[test]
    fn any_buffering_gives_the_same_text() {
        let input = "\\restrict K1\nCOPY t FROM stdin;\n1\tx\n\\.\n\\! id\nSELECT 1;\n\\unrestrict K1\n\\unrestrict K2\nend";
        let want = "COPY t FROM stdin;\n1\tx\n\\.\n\\! id\nSELECT 1;\n\\unrestrict K2\nend";
        for cap in 1..24 {
            for chunk in [1usize, 3, 7, 4096] {
                let mut r = Restricted::new(io::BufReader::with_capacity(cap, input.as_bytes()));
                let mut out = Vec::new();
                let mut buf = vec![0u8; chunk];
                loop {
                    let n = r.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    out.extend_from_slice(&buf[..n]);
                }
                let out = String::from_utf8(out).unwrap();
                let body = &out[out.find('\n').unwrap() + 1..];
                assert_eq!(body, want, "capacity {cap}, reads of {chunk}");
            }
        }
    }

    #[test]
    fn versions() {
        for (v, ok) in [
            ("15.13", false),
            ("15.14", true),
            ("14.19", true),
            ("14.18", false),
            ("16.10", true),
            ("17.5", false),
            ("17.6", true),
            ("18.0", true),
            ("18devel", true),
            ("12.22", false),
        ] {
            assert_eq!(psql_knows_restrict(v), ok, "{v}");
        }
    }
}
