//! Credentials, region and endpoint, found where the AWS tools look:
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_SESSION_TOKEN`, else
//! the profile (`AWS_PROFILE`, default `default`) of `~/.aws/credentials`
//! (`AWS_SHARED_CREDENTIALS_FILE`); the region from `AWS_REGION`,
//! `AWS_DEFAULT_REGION` or `~/.aws/config` (`AWS_CONFIG_FILE`); the endpoint
//! from `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL` or the profile's
//! `endpoint_url`; extra CA certificates from `AWS_CA_BUNDLE`.
//!
//! Secrets stay in memory: they are never printed, logged or put in a
//! record or argv.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use opskit::{Error, Result};

/// What the AWS settings say.
#[derive(Clone)]
pub struct Settings {
    pub key: String,
    pub secret: String,
    pub token: Option<String>,
    pub region: String,
    pub endpoint: Option<String>,
    pub ca_bundle: Option<PathBuf>,
    /// Where the credentials came from, for messages (never the secret).
    pub source: String,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("key", &self.key)
            .field("region", &self.region)
            // An endpoint URL may carry userinfo: never shown.
            .field(
                "endpoint",
                &self.endpoint.as_deref().map(opskit::pgconn::redact),
            )
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

type Env<'a> = dyn Fn(&str) -> Option<String> + 'a;

/// The settings from the process environment and the files it names.
pub fn from_env() -> Result<Settings> {
    resolve(&|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
}

/// The settings, with `env` in place of the environment (tests).
pub fn resolve(env: &Env<'_>) -> Result<Settings> {
    let home = env("HOME").map(PathBuf::from);
    let aws_file = |var: &str, name: &str| {
        env(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let profile = env("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let creds_file = aws_file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_file = aws_file("AWS_CONFIG_FILE", "config");
    let config = match &config_file {
        Some(p) => section(p, &profile, true)?,
        None => HashMap::new(),
    };
    let (key, secret, token, source) = match (
        env("AWS_ACCESS_KEY_ID"),
        env("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(k), Some(s)) => (
            k,
            s,
            env("AWS_SESSION_TOKEN"),
            "AWS_ACCESS_KEY_ID".to_string(),
        ),
        (Some(_), None) => {
            return Err(Error::usage(
                "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not",
            ));
        }
        _ => {
            let from_creds = match &creds_file {
                Some(p) => section(p, &profile, false)?,
                None => HashMap::new(),
            };
            let get = |k: &str| from_creds.get(k).or_else(|| config.get(k)).cloned();
            match (get("aws_access_key_id"), get("aws_secret_access_key")) {
                (Some(k), Some(s)) => (
                    k,
                    s,
                    get("aws_session_token"),
                    format!(
                        "profile {profile} in {}",
                        creds_file
                            .as_deref()
                            .map_or("~/.aws".into(), |p| p.display().to_string())
                    ),
                ),
                _ => {
                    return Err(Error::usage(format!(
                        "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile {profile} in {}",
                        creds_file
                            .as_deref()
                            .map_or("~/.aws/credentials".into(), |p| p.display().to_string())
                    )));
                }
            }
        }
    };
    let region = env("AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| config.get("region").cloned())
        .unwrap_or_else(|| "us-east-1".into());
    let endpoint = env("AWS_ENDPOINT_URL_S3")
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| config.get("endpoint_url").cloned());
    Ok(Settings {
        key,
        secret,
        token,
        region,
        endpoint,
        ca_bundle: env("AWS_CA_BUNDLE").map(PathBuf::from),
        source,
    })
}

/// The keys of one profile of an AWS ini file (`[name]` in credentials,
/// `[profile name]` or `[default]` in config). A missing file is empty.
fn section(path: &Path, profile: &str, config: bool) -> Result<HashMap<String, String>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io("reading", path, &e)),
    };
    let want = if config && profile != "default" {
        format!("profile {profile}")
    } else {
        profile.to_string()
    };
    let mut out = HashMap::new();
    let mut inside = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == want;
            continue;
        }
        if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_lowercase(), v.trim().to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn environment_wins_then_profile_files() {
        let d = tempfile::tempdir().unwrap();
        let aws = d.path().join(".aws");
        fs::create_dir(&aws).unwrap();
        fs::write(
            aws.join("credentials"),
            "[default]\naws_access_key_id = DEF\naws_secret_access_key = defsecret\n[backup]\naws_access_key_id=BK\naws_secret_access_key=bksecret\naws_session_token=tok\n",
        )
        .unwrap();
        fs::write(
            aws.join("config"),
            "[default]\nregion = eu-west-1\n[profile backup]\nregion = eu-central-1\nendpoint_url = http://127.0.0.1:8333\n",
        )
        .unwrap();
        let home = d.path().to_str().unwrap();
        let s = resolve(&env_of(&[("HOME", home)])).unwrap();
        assert_eq!((s.key.as_str(), s.region.as_str()), ("DEF", "eu-west-1"));
        assert!(s.endpoint.is_none());
        let s = resolve(&env_of(&[("HOME", home), ("AWS_PROFILE", "backup")])).unwrap();
        assert_eq!(s.key, "BK");
        assert_eq!(s.token.as_deref(), Some("tok"));
        assert_eq!(s.region, "eu-central-1");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:8333"));
        assert!(!format!("{s:?}").contains("bksecret"));
        let s = resolve(&env_of(&[
            ("HOME", home),
            ("AWS_ACCESS_KEY_ID", "ENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_REGION", "us-west-2"),
            ("AWS_ENDPOINT_URL", "http://localhost:1"),
        ]))
        .unwrap();
        assert_eq!((s.key.as_str(), s.region.as_str()), ("ENV", "us-west-2"));
        assert_eq!(s.endpoint.as_deref(), Some("http://localhost:1"));
    }

    #[test]
    fn endpoint_userinfo_is_not_shown() {
        let s = resolve(&env_of(&[
            ("AWS_ACCESS_KEY_ID", "K"),
            ("AWS_SECRET_ACCESS_KEY", "S"),
            ("AWS_ENDPOINT_URL", "https://AKIACNRY:SecretCnry@minio:9000"),
        ]))
        .unwrap();
        assert!(!format!("{s:?}").contains("Cnry"), "{s:?}");
        assert!(format!("{s:?}").contains("minio:9000"), "{s:?}");
    }

    #[test]
    fn missing_credentials_are_a_usage_error() {
        let d = tempfile::tempdir().unwrap();
        let e = resolve(&env_of(&[("HOME", d.path().to_str().unwrap())])).unwrap_err();
        assert_eq!(e.exit, opskit::Exit::Usage);
        assert!(e.msg.starts_with("no S3 credentials"), "{}", e.msg);
        let e = resolve(&env_of(&[("AWS_ACCESS_KEY_ID", "x")])).unwrap_err();
        assert!(e.msg.contains("AWS_SECRET_ACCESS_KEY is not"), "{}", e.msg);
    }
}
