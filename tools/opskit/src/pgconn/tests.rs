//! Resolution of connection settings (no server needed).

use super::*;
use std::collections::HashMap;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let m: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| m.get(k).cloned()
}

fn res(url: &str) -> ConnSpec {
    ConnSpec::resolve_with(Some(url), &env_of(&[("HOME", "/nonexistent")])).unwrap()
}

#[test]
fn full_url() {
    let s = res(
        "postgresql://app:s3cr%40t%2Fx@db.example:6543/shop?sslmode=disable&connect_timeout=5&application_name=nightly",
    );
    assert_eq!(s.host, Host::Tcp("db.example".into()));
    assert_eq!(s.port, 6543);
    assert_eq!(s.user, "app");
    assert_eq!(s.password.as_deref(), Some("s3cr@t/x"));
    assert_eq!(s.dbname, "shop");
    assert_eq!(s.sslmode, SslMode::Disable);
    assert_eq!(s.connect_timeout, Duration::from_secs(5));
    assert_eq!(s.application_name.as_deref(), Some("nightly"));
}

#[test]
fn sqlalchemy_forms_drop_the_driver() {
    for scheme in ["postgresql+asyncpg", "postgresql+psycopg2", "postgres"] {
        let s = res(&format!("{scheme}://u:p@h/d"));
        assert_eq!((s.user.as_str(), s.dbname.as_str()), ("u", "d"));
    }
    let s = res("postgresql+asyncpg://u@h/d?ssl=require");
    assert_eq!(s.sslmode, SslMode::Require);
}

#[test]
fn ipv6_and_socket_hosts() {
    let s = res("postgres://u@[::1]:5433/d");
    assert_eq!(s.host, Host::Tcp("::1".into()));
    assert_eq!(s.port, 5433);
    assert_eq!(s.target(), "[::1]:5433");
    let s = res("postgres://u@%2Frun%2Fpg/d");
    assert_eq!(s.host, Host::Socket("/run/pg".into()));
    let s = res("postgres:///d?host=/tmp/sock&port=7000&user=me");
    assert_eq!(s.host, Host::Socket("/tmp/sock".into()));
    assert_eq!(s.target(), "/tmp/sock/.s.PGSQL.7000");
    assert_eq!(s.user, "me");
}

#[test]
fn pg_variables_fill_what_the_url_leaves_out() {
    let env = env_of(&[
        ("PGHOST", "envhost"),
        ("PGPORT", "7777"),
        ("PGUSER", "envuser"),
        ("PGPASSWORD", "envpw"),
        ("PGDATABASE", "envdb"),
    ]);
    let s = ConnSpec::resolve_with(Some("postgres://urluser@/urldb"), &env).unwrap();
    assert_eq!(s.host, Host::Tcp("envhost".into()));
    assert_eq!(s.port, 7777);
    assert_eq!(s.user, "urluser");
    assert_eq!(s.password.as_deref(), Some("envpw"));
    assert_eq!(s.dbname, "urldb");
    let s = ConnSpec::resolve_with(None, &env).unwrap();
    assert_eq!(s.user, "envuser");
    assert_eq!(s.dbname, "envdb");
}

#[test]
fn database_url_is_used_when_no_db_given() {
    let env = env_of(&[
        ("DATABASE_URL", "postgres://a:b@h:1/x"),
        ("PGDATABASE", "y"),
    ]);
    let s = ConnSpec::resolve_with(None, &env).unwrap();
    assert_eq!(s.dbname, "x");
    let s = ConnSpec::resolve_with(Some("postgres://h/z"), &env).unwrap();
    assert_eq!(s.dbname, "z");
}

#[test]
fn defaults() {
    let s = ConnSpec::resolve_with(None, &env_of(&[("PGUSER", "me")])).unwrap();
    assert_eq!(s.host, Host::Socket(DEFAULT_SOCKET_DIR.into()));
    assert_eq!(s.port, 5432);
    assert_eq!(s.dbname, "me");
    assert_eq!(s.sslmode, SslMode::Prefer);
    assert_eq!(s.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
}

#[test]
fn redaction_hides_password_everywhere() {
    let s = res("postgres://app:hunter2@db:5432/shop");
    assert_eq!(s.redacted(), "postgresql://app:***@db:5432/shop");
    assert!(!format!("{s:?}").contains("hunter2"));
    assert!(!format!("{s}").contains("hunter2"));
    let s = res("postgres://app@db/shop");
    assert_eq!(s.redacted(), "postgresql://app@db:5432/shop");
}

#[test]
fn child_env_carries_password_not_argv() {
    let s = res("postgres://app:hunter2@db:5432/shop");
    let env = s.child_env();
    assert!(env.contains(&("PGPASSWORD", "hunter2".into())));
    assert!(env.contains(&("PGHOST", "db".into())));
    assert!(env.contains(&("PGDATABASE", "shop".into())));
}

#[test]
fn bad_urls_are_usage_errors_without_the_password() {
    let cases = [
        ("mysql://u:hunter2@h/d", "not PostgreSQL"),
        ("db.example:5432", "must start with"),
        ("postgres://u:hunter2@h:notaport/d", "invalid port"),
        ("postgres://u:hunter2@h:0/d", "invalid port"),
        ("postgres://u:hunter2@h1,h2/d", "several hosts"),
        ("postgres://u:hunter2@h/d?sslmode=maybe", "invalid sslmode"),
        (
            "postgres://u:hunter2@h/d?bogus=1",
            "unknown parameter 'bogus'",
        ),
        (
            "postgres://u:hunter2@h/d?connect_timeout=soon",
            "connect_timeout",
        ),
        ("postgres://u:hunter2@[::1/d", "unclosed"),
    ];
    for (url, want) in cases {
        let e = ConnSpec::resolve_with(Some(url), &env_of(&[])).unwrap_err();
        assert_eq!(e.exit, crate::Exit::Usage, "{url}");
        assert!(e.msg.contains(want), "{url}: {}", e.msg);
        assert!(!e.msg.contains("hunter2"), "{url}: {}", e.msg);
    }
}

/// libpq (conninfo_uri_parse_options) looks for the userinfo's '@' before
/// the first '/' and before anything else: '?' and '#' in a password are
/// the password's, as psql takes them.
#[test]
fn password_with_question_mark_and_hash_parses_as_libpq_does() {
    let s = res("postgresql://app2:Pw#Canary?2468@host/app");
    assert_eq!(s.user, "app2");
    assert_eq!(s.password.as_deref(), Some("Pw#Canary?2468"));
    assert_eq!(s.host, Host::Tcp("host".into()));
    assert_eq!(s.dbname, "app");
    assert!(!s.redacted().contains("Canary"), "{}", s.redacted());
    let s = res("postgres://u:p?w#x;y&z$@db:5433/shop?sslmode=disable&application_name=a");
    assert_eq!(s.password.as_deref(), Some("p?w#x;y&z$"));
    assert_eq!((s.port, s.dbname.as_str()), (5433, "shop"));
    assert_eq!(s.sslmode, SslMode::Disable);
    assert_eq!(s.application_name.as_deref(), Some("a"));
    let s = res("postgres://u:pw?x@db");
    assert_eq!(s.password.as_deref(), Some("pw?x"));
    assert_eq!(s.host, Host::Tcp("db".into()));
    // A query without userinfo still is a query.
    let s = res("postgres://db/shop?user=me");
    assert_eq!((s.user.as_str(), s.dbname.as_str()), ("me", "shop"));
}

/// A password libpq cannot take unencoded ('/' or '@' in it) is refused,
/// and no message shows any part of it.
#[test]
fn misparsed_passwords_are_never_echoed() {
    for url in [
        "postgres://u:Can/ary@h/d",
        "postgres://u:Can?ary/x@h/d",
        "postgres://u:12/Canary@h/d",
        "postgres://u:Can@ary/x@h/d",
        "postgres://u:Canary",
        "postgres://u:x?Canary&more=1/d",
    ] {
        let e = ConnSpec::resolve_with(Some(url), &env_of(&[])).unwrap_err();
        assert_eq!(e.exit, crate::Exit::Usage, "{url}");
        assert!(!e.msg.contains("Can"), "{url}: {}", e.msg);
        assert!(!e.msg.contains("ary"), "{url}: {}", e.msg);
    }
}

#[test]
fn passfile_is_used_when_no_password() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let pf = d.path().join("pgpass");
    std::fs::write(&pf, "# comment\nother:*:*:*:no\ndb:5432:shop:app:pa\\:ss\n").unwrap();
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let pfs = pf.display().to_string();
    let env = env_of(&[("PGPASSFILE", pfs.as_str())]);
    let s = ConnSpec::resolve_with(Some("postgres://app@db/shop"), &env).unwrap();
    assert_eq!(s.password.as_deref(), Some("pa:ss"));
    // world-readable passfiles are ignored, as libpq does
    std::fs::set_permissions(&pf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let s = ConnSpec::resolve_with(Some("postgres://app@db/shop"), &env).unwrap();
    assert_eq!(s.password, None);
}

#[test]
fn tls_settings_from_url_and_env() {
    let env = env_of(&[
        ("PGSSLROOTCERT", "/env/root.crt"),
        ("PGSSLCERT", "/env/client.crt"),
        ("PGCHANNELBINDING", "require"),
        ("HOME", "/home/op"),
    ]);
    let s = ConnSpec::resolve_with(
        Some("postgres://u@h/d?sslmode=verify-ca&sslrootcert=/url/ca.pem&sslkey=/url/k.key"),
        &env,
    )
    .unwrap();
    assert_eq!(s.sslmode, SslMode::VerifyCa);
    assert_eq!(s.tls.sslrootcert.as_deref(), Some("/url/ca.pem"));
    assert_eq!(s.tls.sslcert, Some(PathBuf::from("/env/client.crt")));
    assert_eq!(s.tls.sslkey, Some(PathBuf::from("/url/k.key")));
    assert_eq!(s.tls.channel_binding, ChannelBinding::Require);
    let child = s.child_env();
    for (k, v) in [
        ("PGSSLMODE", "verify-ca"),
        ("PGSSLROOTCERT", "/url/ca.pem"),
        ("PGSSLCERT", "/env/client.crt"),
        ("PGSSLKEY", "/url/k.key"),
        ("PGCHANNELBINDING", "require"),
    ] {
        assert!(child.contains(&(k, v.to_string())), "{k}: {child:?}");
    }
    // Defaults: libpq's files under ~/.postgresql, read only if present.
    let s = ConnSpec::resolve_with(Some("postgres://u@h/d"), &env_of(&[("HOME", "/h")])).unwrap();
    assert_eq!(
        s.tls.root_file(),
        Some(PathBuf::from("/h/.postgresql/root.crt"))
    );
    assert!(!s.child_env().iter().any(|(k, _)| *k == "PGSSLROOTCERT"));
}

#[test]
fn sslrootcert_system_means_verify_full() {
    let s = res("postgres://u@h/d?sslrootcert=system");
    assert_eq!(s.sslmode, SslMode::VerifyFull);
    let s = res("postgres://u@h/d?sslrootcert=system&sslmode=verify-full");
    assert_eq!(s.sslmode, SslMode::VerifyFull);
    for weak in ["disable", "allow", "prefer", "require", "verify-ca"] {
        let e = ConnSpec::resolve_with(
            Some(&format!(
                "postgres://u@h/d?sslrootcert=system&sslmode={weak}"
            )),
            &env_of(&[]),
        )
        .unwrap_err();
        assert_eq!(e.exit, crate::Exit::Usage);
        assert!(
            e.msg.contains(&format!("sslmode={weak} is too weak")),
            "{}",
            e.msg
        );
    }
}

#[test]
fn bad_tls_values_are_usage_errors() {
    for (url, want) in [
        (
            "postgres://u@h/d?channel_binding=always",
            "invalid channel_binding",
        ),
        ("postgres://u@h/d?sslmode=verify", "invalid sslmode"),
    ] {
        let e = ConnSpec::resolve_with(Some(url), &env_of(&[])).unwrap_err();
        assert!(e.msg.contains(want), "{url}: {}", e.msg);
    }
}

#[test]
fn redact_hides_secrets_of_any_url_or_conninfo() {
    for (given, shown) in [
        (
            "postgresql://app2:Pw#Canary?2468@host/app",
            "postgresql://app2:***@host/app",
        ),
        (
            "postgres+asyncpg://u:p@[::1]:5433/d?sslmode=require&password=Canary",
            "postgres+asyncpg://u:***@[::1]:5433/d?sslmode=require&password=***",
        ),
        ("postgres://u@%2Frun%2Fpg/d", "postgres://u@%2Frun%2Fpg/d"),
        (
            "postgres:///d?host=/tmp/sock&port=7000",
            "postgres:///d?host=/tmp/sock&port=7000",
        ),
        // A '/' in a password: hidden up to its '@'.
        ("postgres://u:Can/ary@h/d", "postgres://u:***@h/d"),
        ("postgres://u:Canary", "postgres://u:***"),
        ("http://[::1", "http://[::1"),
        ("http://[::1]:x/", "http://[::1]:***/"),
        // Other schemes: the whole userinfo, every other query value.
        ("https://ops:Canary@h/x", "https://***@h/x"),
        ("https://ghp_Canary@github.com/", "https://***@github.com/"),
        (
            "https://h/x?token=Canary&Signature=Canary&flag&a=1#Canary",
            "https://h/x?token=***&Signature=***&flag&a=1#***",
        ),
        (
            "http://AKIA:Canary@127.0.0.1:9000",
            "http://***@127.0.0.1:9000",
        ),
        ("s3://AKIA:Canary@bucket/p", "s3://***@bucket/p"),
        (
            "offsite:s3://AKIA:Canary@bucket/p",
            "offsite:s3://***@bucket/p",
        ),
        // Conninfo, as libpq tokenises it.
        (
            "host=db password=Canary dbname=app",
            "host=db password=*** dbname=app",
        ),
        (
            "host = db  password = 'Can\\' ary' user=u",
            "host=db password=*** user=u",
        ),
        ("host=db password", "host=db ***"),
        (
            "https://h/x?X-Amz-Credential=K&X-Amz-Security-Token=T&code=C&0123456789abcdef",
            "https://h/x?X-Amz-Credential=***&X-Amz-Security-Token=***&code=***&***",
        ),
        // Not a URL, not conninfo: as it is.
        ("disk:/var/lib", "disk:/var/lib"),
        ("backup:/b", "backup:/b"),
    ] {
        assert_eq!(redact(given), shown, "{given}");
    }
}

#[test]
fn redact_urls_in_a_message() {
    assert_eq!(
        redact_urls_in("bad uri: https://k:Canary@h/o?X-Amz-Signature=Canary is missing host"),
        "bad uri: https://***@h/o?X-Amz-Signature=*** is missing host"
    );
    assert_eq!(redact_urls_in("io: refused"), "io: refused");
}
