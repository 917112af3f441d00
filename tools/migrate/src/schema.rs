//! `--dump-schema`: db/schema.sql written as dbmate writes it after `up`
//! and `down`, so a project that commits the file sees the same file
//! whichever tool applied its migrations.
//!
//! As dbmate: the real `pg_dump --format=plain --encoding=UTF8
//! --schema-only --no-privileges --no-owner` (with the fixed restrict key
//! `dbmate` where pg_dump writes `\restrict`, so the file is reproducible),
//! then "-- Dbmate schema migrations" and one INSERT of every applied
//! version; leading comment lines dropped, trailing blanks trimmed; the
//! file 0644, its directory created 0755. Unlike dbmate's, opskit's own
//! bookkeeping tables are left out.

use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::{Command, Stdio};

use opskit::pgtools::{self, PgTool};
use opskit::{Error, IoContext, Result, durable};

use crate::db::Db;
use crate::pg;

/// Dump the schema of `db` into `file`.
pub(crate) fn dump(db: &mut Db, file: &Path) -> Result<()> {
    let row = db
        .client
        .query_one(
            "SELECT current_setting('server_version'), current_setting('server_version_num')::int, \
             quote_ident(current_schema())",
            &[],
        )
        .map_err(pg("reading the server version"))?;
    let (version, num, schema): (String, i32, String) = (row.get(0), row.get(1), row.get(2));
    let pg_dump = pgtools::find("pg_dump", pgtools::major_of_num(num as u32), &version, None)?;
    let mut text = schema_only(db, &pg_dump)?;
    text.push_str(&versions(db, &schema)?);
    let text = trim(&text);
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .at("creating", dir)?;
    }
    let mut out = durable::AtomicFile::create(file, 0o644)?;
    out.write_all(text.as_bytes()).at("writing", file)?;
    out.commit()?;
    log::info!("wrote the schema to {}", file.display());
    Ok(())
}

fn schema_only(db: &Db, pg_dump: &PgTool) -> Result<String> {
    let mut cmd = Command::new(&pg_dump.path);
    db.spec.configure_child(&mut cmd);
    cmd.args([
        "--format=plain",
        "--encoding=UTF8",
        "--schema-only",
        "--no-privileges",
        "--no-owner",
        "--exclude-table=opskit_migrations*",
    ]);
    if supports_restrict_key(pg_dump) {
        cmd.arg("--restrict-key=dbmate");
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::failure(format!("running {}: {e}", pg_dump.path.display())))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(Error::failure(format!(
            "pg_dump --schema-only failed: {}",
            err.trim()
        )));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Error::failure("pg_dump --schema-only wrote invalid UTF-8"))
}

/// pg_dump 15.14+, 16.10+, 17.6+ write `\restrict KEY` with a random key
/// unless given one.
fn supports_restrict_key(pg_dump: &PgTool) -> bool {
    Command::new(&pg_dump.path)
        .arg("--help")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--restrict-key"))
}

/// dbmate's tail: the applied versions, oldest first.
fn versions(db: &mut Db, schema: &str) -> Result<String> {
    let rows = db
        .client
        .query(
            "SELECT quote_literal(version) FROM schema_migrations ORDER BY version ASC",
            &[],
        )
        .map_err(pg("reading schema_migrations"))?;
    let versions: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let mut out = String::from("\n--\n-- Dbmate schema migrations\n--\n\n");
    if !versions.is_empty() {
        out.push_str(&format!(
            "INSERT INTO {schema}.schema_migrations (version) VALUES\n    ({});\n",
            versions.join("),\n    (")
        ));
    }
    Ok(out)
}

/// Leading comment and blank lines dropped, trailing white space trimmed.
fn trim(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut preamble = true;
    for line in text.lines() {
        if preamble && (line.is_empty() || line.starts_with("--")) {
            continue;
        }
        preamble = false;
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn trim_drops_the_header_and_trailing_blanks() {
        let t = super::trim("--\n-- PostgreSQL database dump\n\nSET a = 1;  \n\n-- x\nB\n");
        assert_eq!(t, "SET a = 1;\n\n-- x\nB\n");
    }
}
