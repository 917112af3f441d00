//! Parsing a PostgreSQL URL into the settings it names.

use percent_encoding::percent_decode_str;

use crate::Error;

/// The settings a URL gave, before the environment fills the rest.
#[derive(Default, Debug, PartialEq, Eq)]
pub(super) struct Partial {
    pub(super) host: Option<String>,
    pub(super) port: Option<String>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) dbname: Option<String>,
    pub(super) sslmode: Option<String>,
    pub(super) sslrootcert: Option<String>,
    pub(super) sslcert: Option<String>,
    pub(super) sslkey: Option<String>,
    pub(super) channel_binding: Option<String>,
    pub(super) connect_timeout: Option<String>,
    pub(super) application_name: Option<String>,
}

fn decode(s: &str, what: &str) -> Result<String, Error> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| {
            Error::usage(format!(
                "database URL: {what} is not valid UTF-8 after %-decoding"
            ))
        })
}

/// Parse a URL; every problem is a usage error that never echoes the password.
pub(super) fn parse_url(url: &str) -> Result<Partial, Error> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::usage("database URL must start with postgres:// or postgresql://"))?;
    let base = scheme.split('+').next().unwrap_or("");
    if base != "postgres" && base != "postgresql" {
        return Err(Error::usage(format!(
            "database URL scheme '{scheme}' is not PostgreSQL (use postgres:// or postgresql://)"
        )));
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut p = Partial::default();
    let hostport = match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            match userinfo.split_once(':') {
                Some((u, pw)) => {
                    p.user = Some(decode(u, "user")?);
                    p.password = Some(decode(pw, "password")?);
                }
                None => p.user = Some(decode(userinfo, "user")?),
            }
            &authority[i + 1..]
        }
        None => authority,
    };
    if hostport.contains(',') {
        return Err(Error::usage(
            "database URL names several hosts; opskit connects to one (name the primary)",
        ));
    }
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| Error::usage("database URL: unclosed '[' in host"))?;
        (h.to_string(), after.strip_prefix(':').map(str::to_string))
    } else {
        match hostport.rsplit_once(':') {
            Some((h, port)) => (decode(h, "host")?, Some(port.to_string())),
            None => (decode(hostport, "host")?, None),
        }
    };
    if !host.is_empty() {
        p.host = Some(host);
    }
    p.port = port.filter(|s| !s.is_empty());
    if let Some(db) = path.filter(|s| !s.is_empty()) {
        p.dbname = Some(decode(db, "database name")?);
    }
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = decode(v, k)?;
        match k {
            "host" => p.host = Some(v),
            "port" => p.port = Some(v),
            "user" => p.user = Some(v),
            "password" => p.password = Some(v),
            "dbname" => p.dbname = Some(v),
            "sslmode" => p.sslmode = Some(v),
            // asyncpg / SQLAlchemy spelling
            "ssl" => {
                p.sslmode = Some(match v.as_str() {
                    "true" | "1" | "require" => "require".into(),
                    "false" | "0" | "disable" => "disable".into(),
                    other => other.to_string(),
                })
            }
            "sslrootcert" => p.sslrootcert = Some(v),
            "sslcert" => p.sslcert = Some(v),
            "sslkey" => p.sslkey = Some(v),
            "channel_binding" => p.channel_binding = Some(v),
            "connect_timeout" => p.connect_timeout = Some(v),
            "application_name" => p.application_name = Some(v),
            _ => {
                return Err(Error::usage(format!(
                    "database URL: unknown parameter '{k}'"
                )));
            }
        }
    }
    Ok(p)
}
