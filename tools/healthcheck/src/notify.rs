//! `--notify URL`: a JSON POST when a check changes state, after N
//! consecutive failures, with the state kept in `--state FILE` so a
//! flapping endpoint does not page every minute and a recovery is
//! announced once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::run::{Outcome, Status};
use crate::spec::Check;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub checks: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub status: String,
    /// Consecutive runs not OK.
    pub failures: u32,
    /// The status last announced, while a problem is open.
    #[serde(default)]
    pub notified: Option<String>,
    #[serde(default)]
    pub since: Option<String>,
}

/// One announcement.
#[derive(Debug, Clone)]
pub struct Event {
    pub check: String,
    pub target: String,
    pub status: Status,
    pub previous: Option<String>,
    pub detail: String,
}

impl Event {
    pub fn line(&self) -> String {
        match (self.status, &self.previous) {
            (Status::Ok, Some(prev)) => format!(
                "RECOVERED {}: OK again after {prev} ({})",
                self.check, self.detail
            ),
            _ => format!(
                "{} {}: {} [{}]",
                self.status.name(),
                self.check,
                self.detail,
                self.target
            ),
        }
    }
}

/// The largest state file read (a few hundred bytes per check).
pub const MAX_STATE: u64 = 16 << 20;

/// Read the state; a missing file is an empty state, a corrupt one (or a
/// link, a FIFO, one over [`MAX_STATE`]) is an error naming the file (the
/// caller starts afresh and says so).
pub fn load(path: &Path) -> Result<State, String> {
    use opskit::safefs::{open_nofollow, read_bounded};
    if std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound) {
        return Ok(State::default());
    }
    let f = open_nofollow(path, std::fs::OpenOptions::new().read(true)).map_err(|e| e.msg)?;
    let b = read_bounded(f, path, MAX_STATE).map_err(|e| e.msg)?;
    serde_json::from_slice(&b)
        .map_err(|e| format!("{}: not a healthcheck state file: {e}", path.display()))
}

pub fn save(path: &Path, state: &State) -> opskit::Result<()> {
    let text = serde_json::to_vec_pretty(state).expect("state serialises");
    opskit::durable::write_file(path, 0o600, &text)
}

/// Update the state with this run's results; return what to announce.
/// Entries are marked as announced here; the caller calls `unmark` if
/// the POST fails, so the next run tries again.
pub fn transitions(
    state: &mut State,
    checks: &[std::sync::Arc<Check>],
    outs: &[Outcome],
    after: u32,
) -> Vec<Event> {
    let mut events = vec![];
    let now = opskit::record::now_ts();
    for (c, o) in checks.iter().zip(outs) {
        let e = state.checks.entry(c.name.clone()).or_default();
        if e.status != o.status.name() {
            e.since = Some(now.clone());
        }
        e.status = o.status.name().to_string();
        let event = |previous: Option<String>| Event {
            check: c.name.clone(),
            target: c.shown.clone(),
            status: o.status,
            previous,
            detail: o.detail.clone(),
        };
        if o.status == Status::Ok {
            e.failures = 0;
            if let Some(prev) = e.notified.take() {
                events.push(event(Some(prev)));
            }
        } else {
            e.failures += 1;
            if e.failures >= after && e.notified.as_deref() != Some(o.status.name()) {
                events.push(event(e.notified.clone()));
                e.notified = Some(o.status.name().to_string());
            }
        }
    }
    events
}

/// Undo `transitions`' marks after a failed POST.
pub fn unmark(state: &mut State, events: &[Event]) {
    for ev in events {
        if let Some(e) = state.checks.get_mut(&ev.check) {
            e.notified = ev.previous.clone();
        }
    }
}

/// The message: a Slack-compatible `text` plus the details as fields.
pub fn message(events: &[Event]) -> serde_json::Value {
    let host = opskit::sys::hostname().unwrap_or_default();
    json!({
        "text": format!("[{host}] {}", events.iter().map(Event::line).collect::<Vec<_>>().join("\n")),
        "host": host,
        "source": "opskit-healthcheck",
        "ts": opskit::record::now_ts(),
        "events": events.iter().map(|e| json!({
            "check": e.check,
            "target": e.target,
            "status": e.status.name(),
            "previous": e.previous,
            "detail": e.detail,
        })).collect::<Vec<_>>(),
    })
}

/// `--notify URL` must be an http(s) URL with a host; it is not shown when
/// it is not (a webhook URL is a credential).
pub fn check_url(url: &str) -> opskit::Result<()> {
    let ok = url.parse::<ureq::http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some_and(|h| !h.is_empty())
    });
    if ok {
        Ok(())
    } else {
        Err(opskit::Error::usage(
            "--notify: not an http:// or https:// URL with a host (not shown: it may hold a token)",
        ))
    }
}

/// The webhook as records and log lines show it. A webhook URL is a
/// credential, mostly in its path (Slack's `/services/T…/B…/TOKEN`,
/// Discord's `/api/webhooks/ID/TOKEN`, an ntfy topic): only the scheme,
/// the host and a first path segment that more follow are shown, as
/// `https://hooks.example.com/services/***`; userinfo and query values are
/// hidden as in any URL ([`opskit::pgconn::redact`]).
pub fn shown_url(url: &str) -> String {
    let r = opskit::pgconn::redact(url);
    let Some((scheme, rest)) = r.split_once("://") else {
        return "***".into();
    };
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (host, tail) = rest.split_at(host_end);
    let path_end = tail.find(['?', '#']).unwrap_or(tail.len());
    let (path, after) = tail.split_at(path_end);
    let segments = path.strip_prefix('/').unwrap_or(path);
    let path = match segments.split_once('/') {
        Some((first, more)) if !more.is_empty() => format!("/{first}/***"),
        None if !segments.is_empty() => "/***".to_string(),
        _ => path.to_string(),
    };
    format!("{scheme}://{host}{path}{after}")
}

/// POST the message; an error says why, in one line, without the URL.
pub fn post(url: &str, body: &serde_json::Value, timeout: Duration) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let resp = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .map_err(|e| match e {
            // ureq's text of it holds the URL, token and all.
            ureq::Error::BadUri(_) => {
                "the webhook URL (or a redirect from it) is not usable".to_string()
            }
            e => e.to_string(),
        })?;
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(format!("the webhook answered HTTP {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Def, Defaults, HttpOpts, build};
    use std::sync::Arc;

    fn outcome(status: Status) -> Outcome {
        Outcome {
            status,
            detail: "d".into(),
            values: Default::default(),
            conditions: vec![],
            attempts: 1,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn webhook_urls_show_no_token() {
        for (url, shown) in [
            (
                "https://hooks.example.com/services/T0/B0/Tok",
                "https://hooks.example.com/services/***",
            ),
            ("https://ntfy.sh/secret-topic", "https://ntfy.sh/***"),
            (
                "https://u:p@h/api/webhooks/1/Tok?wait=true&token=Tok#x",
                "https://***@h/api/***?wait=true&token=***#***",
            ),
            ("http://127.0.0.1:9/", "http://127.0.0.1:9/"),
            ("http://127.0.0.1:9", "http://127.0.0.1:9"),
            ("not a url/Tok", "***"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
        check_url("https://hooks.example.com/services/T0/B0/Tok").unwrap();
        for bad in [
            "hooks.example.com/services/Tok",
            "ftp://h/Tok",
            "https:///Tok",
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(!e.msg.contains("Tok"), "{}", e.msg);
        }
    }

    #[test]
    fn pages_after_n_failures_once_and_recovers_once() {
        let d = Defaults {
            timeout: Duration::from_secs(1),
            http: HttpOpts::default(),
            database: None,
        };
        let checks = vec![Arc::new(build(
            Def {
                target: "tcp://h:1".into(),
                name: Some("api".into()),
                ..Def::default()
            },
            &d,
        ))];
        let mut st = State::default();
        let run = |st: &mut State, s: Status| transitions(st, &checks, &[outcome(s)], 3);
        assert!(run(&mut st, Status::Critical).is_empty());
        assert!(run(&mut st, Status::Critical).is_empty());
        let ev = run(&mut st, Status::Critical);
        assert_eq!(ev.len(), 1);
        assert!(ev[0].line().starts_with("CRITICAL api"));
        assert!(run(&mut st, Status::Critical).is_empty(), "no repeat page");
        // Escalation and de-escalation are announced.
        assert_eq!(run(&mut st, Status::Warning).len(), 1);
        let ev = run(&mut st, Status::Ok);
        assert_eq!(ev.len(), 1);
        assert!(
            ev[0].line().starts_with("RECOVERED api"),
            "{}",
            ev[0].line()
        );
        assert!(run(&mut st, Status::Ok).is_empty(), "recovery once");
        // A flap shorter than N never pages.
        for s in [
            Status::Critical,
            Status::Critical,
            Status::Ok,
            Status::Critical,
            Status::Ok,
        ] {
            assert!(run(&mut st, s).is_empty());
        }
        // A failed POST is retried next run.
        let ev = {
            run(&mut st, Status::Critical);
            run(&mut st, Status::Critical);
            run(&mut st, Status::Critical)
        };
        assert_eq!(ev.len(), 1);
        unmark(&mut st, &ev);
        assert_eq!(run(&mut st, Status::Critical).len(), 1);
    }

    #[test]
    fn state_file_is_bounded_and_never_a_link_or_a_fifo() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert!(load(&p).unwrap().checks.is_empty());
        let huge = std::fs::File::create(&p).unwrap();
        huge.set_len(MAX_STATE + 1).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        let real = d.path().join("elsewhere.json");
        std::fs::write(&real, r#"{"checks": {}}"#).unwrap();
        std::fs::remove_file(&p).unwrap();
        std::os::unix::fs::symlink(&real, &p).unwrap();
        let e = load(&p).unwrap_err();
        assert!(e.contains("symbolic link"), "{e}");
        std::fs::remove_file(&p).unwrap();
        let st = std::process::Command::new("mkfifo")
            .arg(&p)
            .status()
            .unwrap();
        assert!(st.success());
        let e = load(&p).unwrap_err();
        assert!(e.contains("a FIFO"), "{e}");
        std::fs::remove_file(&p).unwrap();
        std::fs::rename(&real, &p).unwrap();
        load(&p).unwrap();
    }
}
