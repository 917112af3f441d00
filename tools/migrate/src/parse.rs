//! Migration files in dbmate's format: `<version>_<name>.sql` with a
//! `-- migrate:up` section and an optional `-- migrate:down` section;
//! options on the marker line (`transaction:false`).

use std::path::{Path, PathBuf};

use opskit::migrations::{self, split_file_name};
use opskit::{Error, Result};

/// One section of a migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub sql: String,
    pub transaction: bool,
    /// 1-based line of the file where the section's SQL starts.
    pub first_line: usize,
}

/// A parsed migration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: String,
    pub name: String,
    pub file: PathBuf,
    pub up: Section,
    /// None when the file has no down marker; an empty down section is `Some`.
    pub down: Option<Section>,
    /// sha256 of the file with BOM removed and CRLF normalised to LF.
    pub checksum: String,
}

/// Normalise a file's text: no BOM, LF line ends.
pub fn normalise(text: &str) -> String {
    text.strip_prefix('\u{feff}')
        .unwrap_or(text)
        .replace("\r\n", "\n")
}

/// Parse one file's text.
pub fn parse(file: &Path, text: &str) -> Result<Migration> {
    let fname = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (version, name) = split_file_name(&fname).ok_or_else(|| {
        Error::usage(format!(
            "{}: file name must be <version>_<name>.sql",
            file.display()
        ))
    })?;
    let norm = normalise(text);
    let at = |line: usize, msg: String| Error::usage(format!("{}:{line}: {msg}", file.display()));
    let markers = markers(&norm, &at)?;
    let (up_m, down_m) = sections_of(&markers, file, &at)?;
    let lines: Vec<&str> = norm.lines().collect();
    let section = |start: usize, end: usize, transaction: bool| Section {
        sql: lines[start..end].join("\n"),
        transaction,
        first_line: start + 1,
    };
    let up = section(
        up_m.line,
        down_m.map(|d| d.line - 1).unwrap_or(lines.len()),
        up_m.transaction,
    );
    let down = down_m.map(|d| section(d.line, lines.len(), d.transaction));
    Ok(Migration {
        version: version.to_string(),
        name: name.to_string(),
        file: file.to_path_buf(),
        up,
        down,
        checksum: opskit::gz::sha256_hex(norm.as_bytes()),
    })
}

/// A `-- migrate:up` or `-- migrate:down` line.
#[derive(Debug, Clone, Copy)]
struct Marker {
    up: bool,
    transaction: bool,
    /// 1-based.
    line: usize,
}

/// The markers of a file; before the first only comments and blank lines.
fn markers(norm: &str, at: &dyn Fn(usize, String) -> Error) -> Result<Vec<Marker>> {
    let mut out: Vec<Marker> = Vec::new();
    let mut in_block = false;
    for (i, line) in norm.lines().enumerate() {
        let ln = i + 1;
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("--").map(str::trim_start)
            && let Some(rest) = rest.strip_prefix("migrate:")
        {
            out.push(marker(rest, ln, at)?);
        } else if out.is_empty() {
            preamble_line(t, &mut in_block).map_err(|msg| at(ln, msg))?;
        }
    }
    Ok(out)
}

/// `up transaction:false` (what follows `-- migrate:`) on line `ln`.
fn marker(rest: &str, ln: usize, at: &dyn Fn(usize, String) -> Error) -> Result<Marker> {
    let mut words = rest.split_whitespace();
    let kind = words.next().unwrap_or("");
    if kind != "up" && kind != "down" {
        return Err(at(
            ln,
            format!("unknown marker 'migrate:{kind}' (use migrate:up or migrate:down)"),
        ));
    }
    let mut transaction = true;
    for opt in words {
        match opt {
            "transaction:false" => transaction = false,
            "transaction:true" => transaction = true,
            _ => {
                return Err(at(
                    ln,
                    format!("unknown option '{opt}' on the migrate:{kind} line"),
                ));
            }
        }
    }
    Ok(Marker {
        up: kind == "up",
        transaction,
        line: ln,
    })
}

/// A line before the first marker: comments (`--`, `/* ... */`, possibly
/// spanning lines) and blanks only.
fn preamble_line(t: &str, in_block: &mut bool) -> std::result::Result<(), String> {
    let mut rest = t;
    loop {
        if *in_block {
            match rest.find("*/") {
                Some(e) => {
                    *in_block = false;
                    rest = rest[e + 2..].trim_start();
                }
                None => return Ok(()),
            }
        } else if rest.is_empty() || rest.starts_with("--") {
            return Ok(());
        } else if let Some(r) = rest.strip_prefix("/*") {
            *in_block = true;
            rest = r;
        } else {
            return Err("SQL before the first '-- migrate:up' marker".into());
        }
    }
}

/// Exactly one up marker, at most one down marker after it.
fn sections_of(
    markers: &[Marker],
    file: &Path,
    at: &dyn Fn(usize, String) -> Error,
) -> Result<(Marker, Option<Marker>)> {
    let ups: Vec<&Marker> = markers.iter().filter(|m| m.up).collect();
    let downs: Vec<&Marker> = markers.iter().filter(|m| !m.up).collect();
    let Some(up) = ups.first() else {
        return Err(Error::usage(format!(
            "{}: no '-- migrate:up' section",
            file.display()
        )));
    };
    if let Some(second) = ups.get(1) {
        return Err(at(second.line, "a second '-- migrate:up' marker".into()));
    }
    if let Some(second) = downs.get(1) {
        return Err(at(second.line, "a second '-- migrate:down' marker".into()));
    }
    if let Some(d) = downs.first()
        && d.line < up.line
    {
        return Err(at(
            d.line,
            "'-- migrate:down' before '-- migrate:up'".into(),
        ));
    }
    Ok((**up, downs.first().map(|d| **d)))
}

/// The largest migration file read (a schema dump with data is larger,
/// and is not a migration).
pub const MAX_FILE: u64 = 16 << 20;

/// Every migration in `dir` ([`migrations::list_dir`]: ordered by
/// version, two files with the same version refused), parsed.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>> {
    let mut out: Vec<Migration> = Vec::new();
    for f in migrations::list_dir(dir)? {
        // Only a regular file, and not a huge one: a FIFO must not hang
        // `plan`, and a file that cannot be read is an error, not a skip.
        let bytes = opskit::safefs::read_regular(&f.path, MAX_FILE)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::usage(format!("{}: not UTF-8", f.path.display())))?;
        out.push(parse(&f.path, &text)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn p(text: &str) -> Result<Migration> {
        parse(
            Path::new("db/migrations/20261123030000_add_users.sql"),
            text,
        )
    }

    #[test]
    fn accepted_forms() {
        let m = p(
            "-- migrate:up\ncreate table users (id int);\n\n-- migrate:down\ndrop table users;\n",
        )
        .unwrap();
        assert_eq!(
            (m.version.as_str(), m.name.as_str()),
            ("20261123030000", "add_users")
        );
        assert_eq!(m.up.sql, "create table users (id int);\n");
        assert_eq!(m.up.first_line, 2);
        assert!(m.up.transaction);
        assert_eq!(m.down.as_ref().unwrap().sql, "drop table users;");
        assert_eq!(m.down.as_ref().unwrap().first_line, 5);

        // CRLF and a BOM give the same migration and checksum.
        let crlf = p("\u{feff}-- migrate:up\r\ncreate table users (id int);\r\n\r\n-- migrate:down\r\ndrop table users;\r\n").unwrap();
        assert_eq!(crlf.up, m.up);
        assert_eq!(crlf.checksum, m.checksum);

        // Comments (line and block) before the first marker, options, empty down.
        let m = p("-- a comment\n/* block\n still */\n\n-- migrate:up transaction:false\ncreate index concurrently i on t (x);\n-- migrate:down\n").unwrap();
        assert!(!m.up.transaction);
        assert_eq!(m.down.unwrap().sql, "");
        // No down marker at all.
        assert!(p("-- migrate:up\nselect 1;\n").unwrap().down.is_none());
        // dbmate allows spaces: "--  migrate:up".
        assert!(p("--  migrate:up\nselect 1;\n").is_ok());
    }

    #[test]
    fn refused_forms_name_file_and_line() {
        let cases = [
            (
                "select 1;\n-- migrate:up\nselect 2;\n",
                ":1: SQL before the first",
            ),
            (
                "-- c\n/* x */ select 1;\n-- migrate:up\n",
                ":2: SQL before the first",
            ),
            (
                "-- migrate:down\ndrop table x;\n",
                "no '-- migrate:up' section",
            ),
            (
                "-- migrate:down\nx;\n-- migrate:up\ny;\n",
                ":1: '-- migrate:down' before",
            ),
            (
                "-- migrate:up\nx;\n-- migrate:up\ny;\n",
                ":3: a second '-- migrate:up'",
            ),
            (
                "-- migrate:up transaction:maybe\nx;\n",
                ":1: unknown option 'transaction:maybe'",
            ),
            ("-- migrate:sideways\nx;\n", ":1: unknown marker"),
        ];
        for (text, want) in cases {
            let e = p(text).unwrap_err();
            assert_eq!(e.exit, opskit::Exit::Usage);
            assert!(
                e.msg.contains("20261123030000_add_users.sql"),
                "{text:?}: {}",
                e.msg
            );
            assert!(e.msg.contains(want), "{text:?}: {}", e.msg);
        }
    }

    #[test]
    fn duplicate_versions_are_refused() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("001_a.sql"), "-- migrate:up\nselect 1;\n").unwrap();
        fs::write(d.path().join("001_b.sql"), "-- migrate:up\nselect 1;\n").unwrap();
        let e = load_dir(d.path()).unwrap_err();
        assert!(e.msg.contains("have the same version 001"), "{}", e.msg);
    }

    #[test]
    fn an_oversized_file_is_refused_naming_it() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("001_big.sql");
        fs::File::create(&big)
            .unwrap()
            .set_len(MAX_FILE + 1)
            .unwrap();
        let e = load_dir(d.path()).unwrap_err();
        assert_eq!(e.exit, opskit::Exit::Usage);
        assert!(e.msg.contains("001_big.sql is larger than 16"), "{}", e.msg);
    }
}
