//! What a check is: its kind (from the target), its fields, its conditions
//! and options, read from the command line or a checks file.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::expr::{self, Cond, Unit};

/// What a check looks at (the record's `kind`); [`KindSpec`] adds its
/// fields, units and default conditions.
pub use opskit::records::CheckKind as Kind;

use Unit::*;

const HTTP: &[(&str, Unit)] = &[
    ("status", Number),
    ("time_s", Seconds),
    ("body", Text),
    ("body_bytes", Bytes),
    ("body_truncated", Bool),
    ("redirects", Number),
    ("url", Text),
];
const POSTGRES: &[(&str, Unit)] = &[
    ("connect_s", Seconds),
    ("time_s", Seconds),
    ("version", Text),
    ("version_num", Number),
    ("role", Text),
    ("replication_lag_s", Seconds),
    ("replicas", Number),
    ("connections", Number),
    ("max_connections", Number),
    ("connections_pct", Number),
    ("oldest_xact_s", Seconds),
    ("db_size_bytes", Bytes),
    ("tls", Bool),
    ("tls_version", Text),
    ("cert_days_left", Number),
    ("cert_not_after", Text),
    ("archive_mode", Text),
    ("archived_count", Number),
    ("failed_count", Number),
    ("last_archived_age_s", Seconds),
    ("last_failed_age_s", Seconds),
    ("archive_failing", Bool),
    ("wal_bytes", Bytes),
    ("archive_timeout_s", Seconds),
    ("summarize_wal", Bool),
    ("replication_lag_bytes", Bytes),
    ("wal_receiver_status", Text),
    ("streaming", Bool),
    ("streaming_replicas", Number),
    ("slots", Number),
    ("inactive_slots", Number),
    ("lost_slots", Number),
    ("slot_retained_bytes", Bytes),
    ("slot_retained_by", Text),
    ("wal_disk_free_bytes", Bytes),
    ("slot_retained_pct", Number),
];
const TCP: &[(&str, Unit)] = &[("connect_s", Seconds)];
const DISK: &[(&str, Unit)] = &[
    ("free_bytes", Bytes),
    ("total_bytes", Bytes),
    ("free_pct", Number),
    ("inodes_free_pct", Number),
];
const CERT: &[(&str, Unit)] = &[
    ("days_left", Number),
    ("not_after", Text),
    ("subject", Text),
    ("issuer", Text),
    ("certs", Number),
];
const TLS: &[(&str, Unit)] = &[
    ("days_left", Number),
    ("not_after", Text),
    ("subject", Text),
    ("issuer", Text),
    ("certs", Number),
    ("trusted", Bool),
    ("trust_error", Text),
    ("connect_s", Seconds),
];
const BACKUP: &[(&str, Unit)] = &[
    ("sets", Number),
    ("newest", Text),
    ("age_s", Seconds),
    ("newest_bytes", Bytes),
    ("verified", Text),
    ("verified_age_s", Seconds),
    ("verified_depth", Text),
    ("full_verified", Text),
    ("full_verified_age_s", Seconds),
    ("last_verify_ok", Bool),
    ("restore_tested_age_s", Seconds),
    ("restore_s", Seconds),
];
const OFFSITE: &[(&str, Unit)] = &[
    ("sets", Number),
    ("newest", Text),
    ("age_s", Seconds),
    ("incomplete", Number),
    ("verified", Text),
    ("verified_age_s", Seconds),
    ("dated_ahead", Number),
];
const WAL: &[(&str, Unit)] = &[
    ("files", Number),
    ("segments", Number),
    ("timelines", Number),
    ("newest", Text),
    ("age_s", Seconds),
    ("gaps", Number),
    ("first_gap", Text),
    ("window_newest", Text),
    ("window_oldest", Text),
    ("window_age_s", Seconds),
    ("window_width_s", Seconds),
    ("archive_timeout_s", Seconds),
    ("window_overdue_s", Seconds),
];
const MIGRATIONS: &[(&str, Unit)] = &[
    ("pending", Number),
    ("applied", Number),
    ("dirty", Number),
    ("files", Number),
];

/// What healthcheck knows of each kind of check.
pub trait KindSpec: Sized {
    const ALL: [Kind; 10];
    /// The kind's fields and their units.
    fn fields(self) -> &'static [(&'static str, Unit)];
    /// The unit of a field (`json.*` and `header.*` for http).
    fn unit_of(self, field: &str) -> Option<Unit>;
    /// The default expect, warn and crit conditions.
    fn defaults(self) -> [&'static [&'static str]; 3];
    /// The prefixes that scope a condition to the kind (`disk.free_pct`).
    fn aliases(self) -> &'static [&'static str];
}

impl KindSpec for Kind {
    const ALL: [Kind; 10] = [
        Kind::Http,
        Kind::Postgres,
        Kind::Tcp,
        Kind::Disk,
        Kind::Tls,
        Kind::Cert,
        Kind::Backup,
        Kind::Migrations,
        Kind::Offsite,
        Kind::Wal,
    ];

    fn fields(self) -> &'static [(&'static str, Unit)] {
        match self {
            Kind::Http => HTTP,
            Kind::Postgres => POSTGRES,
            Kind::Tcp => TCP,
            Kind::Disk => DISK,
            Kind::Tls => TLS,
            Kind::Cert => CERT,
            Kind::Backup => BACKUP,
            Kind::Migrations => MIGRATIONS,
            Kind::Offsite => OFFSITE,
            Kind::Wal => WAL,
        }
    }

    fn unit_of(self, field: &str) -> Option<Unit> {
        if self == Kind::Http {
            if field.starts_with("json.") || field == "json" {
                return Some(Unit::Json);
            }
            if field.starts_with("header.") {
                return Some(Unit::Text);
            }
        }
        self.fields()
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, u)| *u)
    }

    /// The conditions a check gets when it is given none.
    fn defaults(self) -> [&'static [&'static str]; 3] {
        match self {
            Kind::Http => [&["status == 2xx"], &[], &[]],
            Kind::Disk => [&[], &["free_pct < 10"], &["free_pct < 5"]],
            Kind::Cert => [&[], &["days_left < 14"], &["days_left < 7"]],
            Kind::Tls => [
                &["trusted == true"],
                &["days_left < 14"],
                &["days_left < 7"],
            ],
            Kind::Backup => [&["sets > 0"], &[], &["age_s > 26h"]],
            Kind::Offsite => [&["sets > 0"], &["dated_ahead > 0"], &["age_s > 26h"]],
            // The newest recoverable point older than archive_timeout + 5
            // min: transactions committed since are not in the archive.
            Kind::Wal => [&["segments > 0"], &["window_overdue_s > 0"], &["gaps > 0"]],
            Kind::Migrations => [&[], &["pending > 0"], &["dirty > 0"]],
            // Null compares false: a plaintext connection, a primary (no
            // `streaming`), a server without slots or whose WAL disk this
            // check cannot see pass those rules.
            Kind::Postgres => [
                &[],
                &[
                    "cert_days_left < 14",
                    "streaming == false",
                    "replication_lag_s > 5m",
                    "inactive_slots > 0",
                    "slot_retained_pct > 25",
                ],
                &[
                    "cert_days_left < 7",
                    "archive_failing == true",
                    "replication_lag_s > 30m",
                    "lost_slots > 0",
                    "slot_retained_pct > 50",
                ],
            ],
            Kind::Tcp => [&[], &[], &[]],
        }
    }

    fn aliases(self) -> &'static [&'static str] {
        match self {
            Kind::Http => &["http", "https"],
            Kind::Postgres => &["postgres", "pg"],
            Kind::Tcp => &["tcp"],
            Kind::Disk => &["disk"],
            Kind::Tls => &["tls"],
            Kind::Cert => &["cert"],
            Kind::Backup => &["backup"],
            Kind::Migrations => &["migrations"],
            Kind::Offsite => &["offsite"],
            Kind::Wal => &["wal"],
        }
    }
}

/// The kind a target names, from its scheme.
pub fn kind_of(target: &str) -> Result<Kind, String> {
    let scheme = target.split_once(':').map(|(s, _)| s).unwrap_or("");
    Ok(match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => Kind::Http,
        "postgres" | "postgresql" => Kind::Postgres,
        "tcp" => Kind::Tcp,
        "disk" => Kind::Disk,
        "tls" => Kind::Tls,
        "cert" => Kind::Cert,
        "backup" => Kind::Backup,
        "migrations" => Kind::Migrations,
        "offsite" => Kind::Offsite,
        "wal" => Kind::Wal,
        _ => {
            return Err(format!(
                "target '{}': unknown kind (use http://, https://, postgres://, tcp://HOST:PORT, tls://HOST:PORT, disk:PATH, cert:FILE, backup:ROOT, migrations:DIR, offsite:s3://BUCKET/PREFIX, wal:ROOT)",
                redact(target)
            ));
        }
    })
}

pub use opskit::records::Level;

/// One check, ready to run.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub kind: Kind,
    /// As given (may hold a password).
    pub target: String,
    /// For records and messages.
    pub shown: String,
    pub conds: Vec<(Level, Cond)>,
    pub timeout: Duration,
    pub http: HttpOpts,
    /// The database of a `migrations:` check.
    pub database: Option<String>,
    /// Why this check cannot run as defined (it reports UNKNOWN).
    pub invalid: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct HttpOpts {
    pub method: String,
    pub headers: Vec<(String, String)>,
    pub follow_redirects: bool,
    pub body_limit: u64,
    pub insecure: bool,
    pub ca: Option<PathBuf>,
}

/// A check as written: a line of a checks file, or the command line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Def {
    pub name: Option<String>,
    pub target: String,
    #[serde(default)]
    pub expect: OneOrMany,
    #[serde(default)]
    pub warn: OneOrMany,
    #[serde(default)]
    pub crit: OneOrMany,
    pub timeout: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub method: Option<String>,
    pub follow_redirects: Option<bool>,
    pub body_limit: Option<String>,
    pub insecure: Option<bool>,
    pub ca: Option<PathBuf>,
    pub database: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn list(&self) -> Vec<String> {
        match self {
            OneOrMany::None => vec![],
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// Settings that apply to every check unless it says otherwise.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub timeout: Duration,
    pub http: HttpOpts,
    pub database: Option<String>,
}

/// Parse one condition for a check of `kind`. `Ok(None)`: the condition is
/// for another kind (its prefix names one) and does not apply here.
pub fn condition(text: &str, kind: Kind) -> Result<Option<Cond>, String> {
    let (mut field, op, value) = expr::split(text)?;
    if let Some((head, tail)) = field.split_once('.')
        && let Some(k) = Kind::ALL.into_iter().find(|k| k.aliases().contains(&head))
    {
        if k != kind {
            return Ok(None);
        }
        field = tail.to_string();
    }
    let unit = kind.unit_of(&field).ok_or_else(|| {
        let known: Vec<&str> = kind.fields().iter().map(|(f, _)| *f).collect();
        let extra = if kind == Kind::Http {
            ", json.PATH, header.NAME"
        } else {
            ""
        };
        format!(
            "condition '{text}': a {} check has no field '{field}' (it has {}{extra})",
            kind.name(),
            known.join(", ")
        )
    })?;
    let rhs = expr::read_rhs(text, &field, unit, op, &value)?;
    Ok(Some(Cond {
        text: text.trim().to_string(),
        field,
        op,
        rhs,
    }))
}

/// Build a check from its definition. A definition that cannot run still
/// yields a check, marked invalid, so that it reports UNKNOWN.
pub fn build(def: Def, d: &Defaults) -> Check {
    let kind = kind_of(&def.target);
    let shown = redact(&def.target);
    let mut check = Check {
        name: def.name.clone().unwrap_or_else(|| shown.clone()),
        kind: *kind.as_ref().unwrap_or(&Kind::Tcp),
        target: def.target.clone(),
        shown,
        conds: vec![],
        timeout: d.timeout,
        http: d.http.clone(),
        database: def.database.clone().or_else(|| d.database.clone()),
        invalid: None,
    };
    if let Err(e) = kind.and_then(|k| fill(&mut check, k, &def)) {
        check.invalid = Some(e);
    }
    check
}

fn fill(check: &mut Check, kind: Kind, def: &Def) -> Result<(), String> {
    let lists = [
        (Level::Expect, def.expect.list()),
        (Level::Warn, def.warn.list()),
        (Level::Crit, def.crit.list()),
    ];
    for (level, list) in &lists {
        for text in list {
            if let Some(c) = condition(text, kind)? {
                check.conds.push((*level, c));
            }
        }
    }
    if check.conds.is_empty() {
        let levels = [Level::Expect, Level::Warn, Level::Crit];
        for (level, list) in levels.iter().zip(kind.defaults()) {
            for text in list {
                let c = condition(text, kind)?.expect("default conditions parse");
                check.conds.push((*level, c));
            }
        }
    }
    if let Some(t) = &def.timeout {
        check.timeout = opskit::units::parse_duration(t).map_err(|e| e.msg)?;
    }
    // A URL that cannot be parsed is a broken definition (UNKNOWN), not a
    // failing endpoint (CRITICAL).
    if kind == Kind::Http
        && let Err(e) = check.target.parse::<ureq::http::Uri>()
    {
        return Err(format!("bad URL {}: {e}", check.shown));
    }
    let h = &mut check.http;
    for (k, v) in &def.headers {
        h.headers.retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        h.headers.push((k.clone(), v.clone()));
    }
    if let Some(m) = &def.method {
        h.method = m.to_ascii_uppercase();
    }
    if !matches!(h.method.as_str(), "GET" | "HEAD") {
        return Err(format!(
            "method '{}': only GET and HEAD are checks",
            h.method
        ));
    }
    if let Some(f) = def.follow_redirects {
        h.follow_redirects = f;
    }
    if let Some(b) = &def.body_limit {
        h.body_limit = opskit::units::parse_size(b).map_err(|e| e.msg)?;
    }
    if let Some(i) = def.insecure {
        h.insecure = i;
    }
    if let Some(ca) = &def.ca {
        h.ca = Some(ca.clone());
    }
    if kind == Kind::Migrations
        && check.database.is_none()
        && std::env::var_os("DATABASE_URL").is_none()
    {
        return Err(
            "a migrations: check needs a database (--db, \"database\", or DATABASE_URL)".into(),
        );
    }
    check.kind = kind;
    Ok(())
}

/// A target as records, messages and metric labels show it: passwords,
/// userinfo, query values and conninfo secrets replaced by `***` (the
/// library's one rule for every tool).
pub use opskit::pgconn::redact;

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            timeout: Duration::from_secs(10),
            http: HttpOpts {
                method: "GET".into(),
                follow_redirects: true,
                body_limit: 1 << 20,
                ..HttpOpts::default()
            },
            database: None,
        }
    }

    #[test]
    fn kinds_from_targets() {
        assert_eq!(kind_of("https://x/health").unwrap(), Kind::Http);
        assert_eq!(kind_of("postgresql://u@h/db").unwrap(), Kind::Postgres);
        assert_eq!(kind_of("disk:/var").unwrap(), Kind::Disk);
        assert!(kind_of("ftp://x").unwrap_err().contains("unknown kind"));
        assert!(
            kind_of("localhost:80")
                .unwrap_err()
                .contains("unknown kind")
        );
    }

    #[test]
    fn prefixes_pick_the_kind() {
        assert!(
            condition("disk.free_pct < 20", Kind::Disk)
                .unwrap()
                .is_some()
        );
        assert!(
            condition("disk.free_pct < 20", Kind::Http)
                .unwrap()
                .is_none()
        );
        assert!(
            condition("json.status == ok", Kind::Http)
                .unwrap()
                .is_some()
        );
        let e = condition("free_pct < 20", Kind::Http).unwrap_err();
        assert!(e.contains("a http check has no field 'free_pct'"), "{e}");
    }

    #[test]
    fn defaults_apply_only_without_conditions() {
        let c = build(
            Def {
                target: "http://x/".into(),
                ..Def::default()
            },
            &defaults(),
        );
        assert_eq!(c.conds.len(), 1);
        assert_eq!(c.conds[0].1.text, "status == 2xx");
        let c = build(
            Def {
                target: "http://x/".into(),
                expect: OneOrMany::One("status == 302".into()),
                ..Def::default()
            },
            &defaults(),
        );
        assert_eq!(c.conds.len(), 1);
        assert_eq!(c.conds[0].1.text, "status == 302");
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact("postgres://app:s3cr3t@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(
            redact("https://u:p@h/x?password=zz&a=1"),
            "https://***@h/x?password=***&a=1"
        );
        assert_eq!(redact("disk:/var"), "disk:/var");
    }

    #[test]
    fn redaction_of_passwords_tokens_and_conninfo() {
        for (target, shown) in [
            (
                "postgresql://app2:Pw#Canary?2468@host/app",
                "postgresql://app2:***@host/app",
            ),
            (
                "postgres://u:Can/ary@h:5432/d?sslmode=require",
                "postgres://u:***@h:5432/d?sslmode=require",
            ),
            (
                "https://h/x?token=Canary&apikey=Canary&sig=Canary#Canary",
                "https://h/x?token=***&apikey=***&sig=***#***",
            ),
            ("https://Canary@h/x", "https://***@h/x"),
            (
                "offsite:s3://AKIA:Canary@bucket/db",
                "offsite:s3://***@bucket/db",
            ),
        ] {
            assert_eq!(redact(target), shown, "{target}");
        }
        let e = kind_of("host=db password=Canary dbname=app").unwrap_err();
        assert!(e.contains("'host=db password=*** dbname=app'"), "{e}");
        let e = kind_of("host=db password = 'Can ary' dbname=app").unwrap_err();
        assert!(!e.contains("Can") && !e.contains("ary"), "{e}");
    }
}
