//! Running checks: each attempt under a hard deadline, retries, all checks
//! at once (bounded), and the verdict from the conditions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opskit::records::Condition;
use serde_json::Value;

use crate::probe::{self, Observation};
use crate::spec::{Check, KindSpec, Level};

pub use opskit::records::Status;

/// The result of one check.
#[derive(Debug)]
pub struct Outcome {
    pub status: Status,
    pub detail: String,
    pub values: serde_json::Map<String, Value>,
    pub conditions: Vec<Condition>,
    pub attempts: u32,
    pub duration: Duration,
}

/// How to run the checks.
#[derive(Debug, Clone)]
pub struct Policy {
    pub concurrency: usize,
    pub retries: u32,
    pub interval: Duration,
    pub start_period: Duration,
}

/// A short rendering of a value for messages.
fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// A value in its unit, for people: `73.8 GiB`, `30.2 h`.
fn readable(v: &Value, unit: Option<crate::expr::Unit>) -> String {
    use crate::expr::Unit;
    match (unit, v.as_f64()) {
        (Some(Unit::Bytes), Some(b)) => opskit::units::format_size(b as u64),
        (Some(Unit::Seconds), Some(s)) if s >= 5400.0 => format!("{:.1} h", s / 3600.0),
        (Some(Unit::Seconds), Some(s)) if s >= 90.0 => format!("{:.1} min", s / 60.0),
        (Some(Unit::Seconds), Some(s)) => format!("{s} s"),
        _ => short(v),
    }
}

/// The verdict of a probe's result under the check's conditions.
pub fn evaluate(check: &Check, res: Result<Observation, String>, duration: Duration) -> Outcome {
    let obs = match res {
        Ok(o) => o,
        Err(why) => {
            return Outcome {
                status: Status::Critical,
                detail: why,
                values: Default::default(),
                conditions: vec![],
                attempts: 1,
                duration,
            };
        }
    };
    let mut status = Status::Ok;
    let mut problems = vec![];
    let mut conditions = vec![];
    for (level, cond) in &check.conds {
        let v = obs.value(&cond.field);
        let met = cond.eval(&v);
        let verdict = match (level, met) {
            (Level::Expect, false) | (Level::Crit, true) => Status::Critical,
            (Level::Warn, true) => Status::Warning,
            _ => Status::Ok,
        };
        if verdict != Status::Ok {
            let shown = readable(&v, check.kind.unit_of(&cond.field));
            problems.push((
                verdict,
                format!("{} is {shown} ({} {})", cond.field, level.name(), cond.text),
            ));
        }
        status = status.worst(verdict);
        let shown = if cond.field == "body" {
            Value::from(short(&v))
        } else {
            v
        };
        conditions.push(Condition {
            level: *level,
            expr: cond.text.clone(),
            value: shown,
            met,
            status: verdict,
        });
    }
    // Name the conditions that decided the status, not the milder ones.
    let decisive: Vec<String> = problems
        .into_iter()
        .filter(|(s, _)| *s == status)
        .map(|(_, p)| p)
        .collect();
    let detail = if decisive.is_empty() {
        obs.summary
    } else {
        format!("{}: {}", decisive.join("; "), obs.summary)
    };
    Outcome {
        status,
        detail,
        values: obs.values,
        conditions,
        attempts: 1,
        duration,
    }
}

/// One attempt, which always ends within the check's timeout: the probe
/// runs on its own thread and is abandoned if it overruns (its own I/O
/// timeouts end it soon after).
pub fn attempt(check: &Arc<Check>) -> Outcome {
    let start = Instant::now();
    if let Some(why) = &check.invalid {
        return Outcome {
            status: Status::Unknown,
            detail: format!("bad check definition: {why}"),
            values: Default::default(),
            conditions: vec![],
            attempts: 1,
            duration: Duration::ZERO,
        };
    }
    let c = Arc::clone(check);
    let res = match opskit::pool::within(check.timeout, "probe", move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| probe::run(&c)))
            .unwrap_or_else(|_| Err("the probe crashed (a bug: please report it)".into()))
    }) {
        Err(e) => Err(format!("cannot start the probe: {e}")),
        Ok(Some(r)) => r,
        Ok(None) => Err(format!(
            "no answer within {} (timed out)",
            opskit::units::format_duration(check.timeout)
        )),
    };
    evaluate(check, res, start.elapsed())
}

/// Attempts with retries: up to `retries` more after a failure, `interval`
/// apart; failures inside the start period do not use up a retry.
pub fn with_retries(check: &Arc<Check>, p: &Policy, run_start: Instant) -> Outcome {
    let start = Instant::now();
    let mut attempts = 0;
    let mut used = 0;
    loop {
        let mut out = attempt(check);
        attempts += 1;
        let starting = run_start.elapsed() < p.start_period;
        if out.status == Status::Ok
            || out.status == Status::Unknown
            || (!starting && used >= p.retries)
        {
            out.attempts = attempts;
            out.duration = start.elapsed();
            return out;
        }
        if !starting {
            used += 1;
        }
        log::info!(
            "{}: {} ({}), retrying in {}",
            check.name,
            out.status.name(),
            out.detail,
            opskit::units::format_duration(p.interval)
        );
        std::thread::sleep(p.interval);
    }
}

/// Run every check, `concurrency` at a time; results in the checks' order.
pub fn run_all(checks: &[Arc<Check>], p: &Policy, run_start: Instant) -> Vec<Outcome> {
    opskit::pool::map(checks, p.concurrency, |c| with_retries(c, p, run_start))
}
