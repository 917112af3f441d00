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
    pub(super) options: Option<String>,
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

/// Where the userinfo of `rest` (what follows `scheme://`) ends, as libpq's
/// `conninfo_uri_parse_options` finds it: at the '@' before the first '/'
/// ('?' and '#' in a password are the password's). libpq takes the first
/// '@'; the last is taken here, as a host never holds one.
fn userinfo_end(rest: &str) -> Option<usize> {
    let slash = rest.find('/').unwrap_or(rest.len());
    rest[..slash].rfind('@')
}

/// A parameter name as messages show it: a plain word, else not at all
/// (an '&' in a password can make a piece of it look like a name).
fn param_name(k: &str) -> &str {
    let word =
        !k.is_empty() && k.len() <= 64 && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if word { k } else { "a parameter" }
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
    let mut p = Partial::default();
    let after = match userinfo_end(rest) {
        Some(i) => {
            let userinfo = &rest[..i];
            match userinfo.split_once(':') {
                Some((u, pw)) => {
                    p.user = Some(decode(u, "user")?);
                    p.password = Some(decode(pw, "password")?);
                }
                None => p.user = Some(decode(userinfo, "user")?),
            }
            &rest[i + 1..]
        }
        None => rest,
    };
    // libpq would take the text before such an '@' as host, port and
    // database: pieces of a password with a '/' in it.
    if after.contains('@') {
        return Err(Error::usage(
            "database URL: an '@' after the host (write '@' as %40 and '/' as %2F in a user name, password or parameter)",
        ));
    }
    let end = after.find(['/', '?']).unwrap_or(after.len());
    let (hostport, tail) = after.split_at(end);
    let (path, query) = match tail.strip_prefix('/') {
        Some(t) => match t.split_once('?') {
            Some((db, q)) => (Some(db), Some(q)),
            None => (Some(t), None),
        },
        None => (None, tail.strip_prefix('?')),
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
    let port = port.filter(|s| !s.is_empty());
    if port
        .as_ref()
        .is_some_and(|s| !s.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(Error::usage(
            "database URL: invalid port after the host (not a number)",
        ));
    }
    p.port = port;
    if let Some(db) = path.filter(|s| !s.is_empty()) {
        p.dbname = Some(decode(db, "database name")?);
    }
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        set_param(&mut p, k, decode(v, param_name(k))?)?;
    }
    Ok(p)
}

/// One `?key=value` of a URL (the value %-decoded) into its setting.
fn set_param(p: &mut Partial, k: &str, v: String) -> Result<(), Error> {
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
        "options" => p.options = Some(v),
        _ => {
            return Err(Error::usage(match param_name(k) {
                "a parameter" => {
                    "database URL: an unknown parameter (write '&' as %26 in a password)"
                        .to_string()
                }
                k => format!("database URL: unknown parameter '{k}'"),
            }));
        }
    }
    Ok(())
}

/// What the name of a parameter whose value is a credential contains
/// (lower case): `password`, `token`, `access_token`, `apikey`, `api_key`,
/// `secret`, `sig`, `signature`, `X-Amz-Credential`, `auth`, `code` (Azure
/// Functions' key), `session`, … [`redact`] hides their values and shows
/// the others, so that checks of `/health?check=db` and `?check=redis`
/// keep names of their own.
const SECRET_NAMES: &[&str] = &[
    "pass", "pw", "secret", "token", "key", "sig", "auth", "cred", "session", "code", "jwt",
    "ticket", "private",
];

/// A bare query word this long may be a token (`?3f9a…`): hidden.
const TOKEN_LEN: usize = 16;

/// `text` as messages, records and metric labels may show it, with every
/// secret it can hold replaced by `***`:
///
/// * a URL of any scheme (`postgres://`, `https://`, `s3://`, also after a
///   prefix such as `offsite:`): a database URL keeps its user name and
///   loses its password; any other URL loses its whole userinfo (it may
///   be a token alone, or an access key); query values whose parameter's
///   name looks like a credential ([`SECRET_NAMES`]), bare query words of
///   16 characters or more, and the fragment are hidden;
/// * a libpq conninfo string (`host=db password=…`): the values of
///   keywords that look like a credential are hidden.
///
/// The userinfo is found as libpq finds it (see `userinfo_end`), so a `?`
/// or `#` in a password is hidden with it. Anything else is returned as is.
pub fn redact(text: &str) -> String {
    if let Some((scheme, rest)) = text.split_once("://") {
        let last = scheme.rsplit(':').next().unwrap_or(scheme);
        let base = last.split('+').next().unwrap_or("").to_ascii_lowercase();
        let db = base == "postgres" || base == "postgresql";
        return format!("{scheme}://{}", redact_url_rest(rest, db));
    }
    if looks_like_conninfo(text) {
        return redact_conninfo(text);
    }
    text.to_string()
}

/// A message from elsewhere (an HTTP library's error, which may quote the
/// request's URL) with [`redact`] applied to every word holding a URL.
pub fn redact_urls_in(text: &str) -> String {
    let words: Vec<String> = text
        .split(' ')
        .map(|w| {
            if w.contains("://") {
                redact(w)
            } else {
                w.to_string()
            }
        })
        .collect();
    words.join(" ")
}

/// What follows `scheme://`, redacted.
fn redact_url_rest(rest: &str, db: bool) -> String {
    // A password with a '/' in it ends before its '@': take the last '@'
    // when what comes before the first '/' reads as "user:pass…".
    let misplaced = || {
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        rest[..end].contains(':').then(|| rest.rfind('@')).flatten()
    };
    let (auth, after) = match userinfo_end(rest).or_else(misplaced) {
        Some(i) => {
            let userinfo = &rest[..i];
            let shown = match userinfo.split_once(':') {
                Some((user, _)) if db => format!("{user}:***@"),
                None if db => format!("{userinfo}@"),
                _ => "***@".to_string(),
            };
            (shown, &rest[i + 1..])
        }
        None => (String::new(), rest),
    };
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let (hostport, tail) = after.split_at(end);
    let end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, tail) = tail.split_at(end);
    let (query, fragment) = match tail.find('#') {
        Some(i) => (&tail[..i], &tail[i + 1..]),
        None => (tail, ""),
    };
    let mut out = format!("{auth}{}{path}", redact_port(hostport));
    if let Some(q) = query.strip_prefix('?') {
        out.push('?');
        out.push_str(&redact_query(q));
    }
    if tail.contains('#') {
        out.push_str(if fragment.is_empty() { "#" } else { "#***" });
    }
    out
}

/// `host:port` with a port that is not a number hidden (it is the start
/// of a password whose '@' comes later, or nothing worth showing).
fn redact_port(hostport: &str) -> String {
    let split = if hostport.starts_with('[') {
        hostport.rfind(']').map_or(hostport.len(), |i| i + 1)
    } else {
        hostport.find(':').unwrap_or(hostport.len())
    };
    let (host, port) = hostport.split_at(split);
    match port.strip_prefix(':') {
        Some(n) if !n.chars().all(|c| c.is_ascii_digit()) => format!("{host}:***"),
        _ => hostport.to_string(),
    }
}

fn secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_NAMES.iter().any(|s| key.contains(s))
}

/// `a=1&token=x&flag` → `a=1&token=***&flag`.
fn redact_query(query: &str) -> String {
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if secret_param(k) => format!("{k}=***"),
            None if pair.len() >= TOKEN_LEN => "***".to_string(),
            _ => pair.to_string(),
        })
        .collect();
    pairs.join("&")
}

/// Whether `text` starts as a conninfo string does: `keyword =`.
fn looks_like_conninfo(text: &str) -> bool {
    let t = text.trim_start();
    let end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    end > 0 && t[end..].trim_start().starts_with('=')
}

/// A conninfo string, tokenised as libpq's `conninfo_parse` does (values
/// bare or in single quotes, `\` escaping), with secret values hidden.
fn redact_conninfo(text: &str) -> String {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(rest.len());
        let key = &rest[..end];
        let Some(after) = rest[end..].trim_start().strip_prefix('=') else {
            out.push("***".to_string());
            break;
        };
        let (value, next) = conninfo_value(after.trim_start());
        out.push(if secret_param(key) {
            format!("{key}=***")
        } else {
            format!("{key}={value}")
        });
        rest = next.trim_start();
    }
    out.join(" ")
}

/// One conninfo value as written, and what follows it.
fn conninfo_value(s: &str) -> (&str, &str) {
    let quoted = s.starts_with('\'');
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(usize::from(quoted)) {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' if quoted => return s.split_at(i + 1),
            c if !quoted && c.is_whitespace() => return s.split_at(i),
            _ => {}
        }
    }
    (s, "")
}
