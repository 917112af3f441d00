//! The condition language: `FIELD OP VALUE`, one comparison per condition.
//!
//! - FIELD is one of the check's fields (`status`, `free_pct`, `age_s`, ...),
//!   optionally prefixed by the check's kind (`disk.free_pct`), or a path
//!   into the response: `json.a.b.0.c`, `header.content-type`.
//! - OP is `== != < <= > >=`, `contains`, `!contains`, `=~` or `!~` (regex).
//! - VALUE is read by the field's unit: seconds fields take durations
//!   (`300ms`, `26h`, or a bare number of seconds), byte fields take sizes
//!   (`10G`), numbers take numbers (`status` also takes a class: `2xx`),
//!   text takes a word or a quoted string, booleans `true`/`false`; `null`
//!   compares with a missing value.
//!
//! A comparison whose field has no value (null) is false, except `== null`
//! and `!= VALUE`: "no replicas, so no lag" does not trip `lag_s > 30s`.

use regex::Regex;
use serde_json::Value;

/// What a field holds, which decides how a condition's VALUE is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Seconds,
    Bytes,
    Number,
    Text,
    Bool,
    /// A JSON value whose type is known only at run time.
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Contains,
    NotContains,
    Matches,
    NotMatches,
}

const OPS: [(&str, Op); 10] = [
    ("!contains", Op::NotContains),
    ("contains", Op::Contains),
    ("==", Op::Eq),
    ("!=", Op::Ne),
    ("<=", Op::Le),
    (">=", Op::Ge),
    ("=~", Op::Matches),
    ("!~", Op::NotMatches),
    ("<", Op::Lt),
    (">", Op::Gt),
];

/// The right-hand side, already read by the field's unit.
#[derive(Debug, Clone)]
pub enum Rhs {
    Null,
    Num(f64),
    /// An HTTP status class: `2xx` is 200..=299.
    Class(u16),
    Text(String),
    Bool(bool),
    Regex(Regex),
}

/// One parsed condition.
#[derive(Debug, Clone)]
pub struct Cond {
    /// As written, for records and messages.
    pub text: String,
    /// The field without a kind prefix.
    pub field: String,
    pub op: Op,
    pub rhs: Rhs,
}

/// Split `FIELD OP VALUE`; the value is read later, once the unit is known.
pub fn split(text: &str) -> Result<(String, Op, String), String> {
    let t = text.trim();
    let field_end = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || "._-[]".contains(c)))
        .unwrap_or(t.len());
    let field = &t[..field_end];
    if field.is_empty() {
        return Err(format!("condition '{text}': expected a field name first"));
    }
    let rest = t[field_end..].trim_start();
    let Some((sym, op)) = OPS.iter().find(|(s, _)| rest.starts_with(s)) else {
        return Err(format!(
            "condition '{text}': expected an operator after '{field}' (== != < <= > >= contains !contains =~ !~)"
        ));
    };
    let value = rest[sym.len()..].trim();
    if value.is_empty() {
        return Err(format!(
            "condition '{text}': missing the value after '{sym}'"
        ));
    }
    Ok((field.to_string(), *op, unquote(value).to_string()))
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Read VALUE for a field of `unit`.
pub fn read_rhs(text: &str, field: &str, unit: Unit, op: Op, value: &str) -> Result<Rhs, String> {
    let bad = |why: String| format!("condition '{text}': {why}");
    match op {
        Op::Matches | Op::NotMatches => {
            return Regex::new(value)
                .map(Rhs::Regex)
                .map_err(|e| bad(format!("bad regex: {}", one_line(&e.to_string()))));
        }
        Op::Contains | Op::NotContains => return Ok(Rhs::Text(value.to_string())),
        _ => {}
    }
    if value == "null" {
        return match op {
            Op::Eq | Op::Ne => Ok(Rhs::Null),
            _ => Err(bad("only == and != compare with null".into())),
        };
    }
    let ordered = matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge);
    match unit {
        Unit::Seconds => value
            .parse::<f64>()
            .ok()
            .or_else(|| {
                opskit::units::parse_duration(value)
                    .ok()
                    .map(|d| d.as_secs_f64())
            })
            .map(Rhs::Num)
            .ok_or_else(|| {
                bad(format!(
                    "'{value}' is not a duration (e.g. 300ms, 30s, 26h)"
                ))
            }),
        Unit::Bytes => opskit::units::parse_size(value)
            .map(|b| Rhs::Num(b as f64))
            .map_err(|_| bad(format!("'{value}' is not a size (e.g. 512, 10M, 1G)"))),
        Unit::Number => {
            if let Some(c) = status_class(value).filter(|_| field == "status" && !ordered) {
                return Ok(Rhs::Class(c));
            }
            value
                .parse::<f64>()
                .map(Rhs::Num)
                .map_err(|_| bad(format!("'{value}' is not a number")))
        }
        Unit::Bool => match value {
            "true" => Ok(Rhs::Bool(true)),
            "false" => Ok(Rhs::Bool(false)),
            _ => Err(bad(format!("'{value}' is not true or false"))),
        },
        Unit::Text if ordered => Err(bad(format!("'{field}' is text: use == != contains =~"))),
        Unit::Text => Ok(Rhs::Text(value.to_string())),
        Unit::Json => Ok(Rhs::Text(value.to_string())),
    }
}

fn status_class(v: &str) -> Option<u16> {
    let b = v.as_bytes();
    (b.len() == 3 && b[0].is_ascii_digit() && b[1..].eq_ignore_ascii_case(b"xx"))
        .then(|| u16::from(b[0] - b'0'))
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Cond {
    /// Whether the condition holds for `v` (the field's value).
    pub fn eval(&self, v: &Value) -> bool {
        let text_of = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match (&self.rhs, self.op) {
            (_, _) if v.is_null() => matches!(
                (&self.rhs, self.op),
                (Rhs::Null, Op::Eq)
                    | (
                        Rhs::Num(_) | Rhs::Text(_) | Rhs::Bool(_) | Rhs::Class(_),
                        Op::Ne
                    )
            ),
            (Rhs::Null, op) => op == Op::Ne,
            (Rhs::Regex(re), op) => re.is_match(&text_of(v)) == (op == Op::Matches),
            (Rhs::Text(s), Op::Contains) => text_of(v).contains(s.as_str()),
            (Rhs::Text(s), Op::NotContains) => !text_of(v).contains(s.as_str()),
            (Rhs::Class(c), op) => {
                let hit = v.as_f64().is_some_and(|n| (n / 100.0).floor() as u16 == *c);
                hit == (op == Op::Eq)
            }
            (Rhs::Num(n), op) => v.as_f64().is_some_and(|x| compare(x, *n, op)),
            (Rhs::Bool(b), op) => v.as_bool().is_some_and(|x| (x == *b) == (op == Op::Eq)),
            // Text against a JSON value: read it by the value's own type.
            (Rhs::Text(s), op) => match v {
                Value::Number(x) => s
                    .parse::<f64>()
                    .ok()
                    .is_some_and(|n| compare(x.as_f64().unwrap_or(f64::NAN), n, op)),
                Value::Bool(x) => match s.as_str() {
                    "true" | "false" => (x.to_string() == *s) == (op == Op::Eq),
                    _ => op == Op::Ne,
                },
                Value::String(x) => match op {
                    Op::Eq => x == s,
                    Op::Ne => x != s,
                    _ => false,
                },
                other => (*other.to_string() == **s) == (op == Op::Eq),
            },
        }
    }
}

fn compare(x: f64, n: f64, op: Op) -> bool {
    match op {
        Op::Eq => x == n,
        Op::Ne => x != n,
        Op::Lt => x < n,
        Op::Le => x <= n,
        Op::Gt => x > n,
        Op::Ge => x >= n,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cond(text: &str, unit: Unit) -> Cond {
        let (field, op, value) = split(text).unwrap();
        let rhs = read_rhs(text, &field, unit, op, &value).unwrap();
        Cond {
            text: text.into(),
            field,
            op,
            rhs,
        }
    }

    #[test]
    fn splits_with_and_without_spaces() {
        assert_eq!(
            split("status==200").unwrap(),
            ("status".into(), Op::Eq, "200".into())
        );
        assert_eq!(
            split("  json.status  ==  'healthy' ").unwrap(),
            ("json.status".into(), Op::Eq, "healthy".into())
        );
        assert_eq!(
            split("body !contains \"error\"").unwrap().1,
            Op::NotContains
        );
        assert_eq!(split("time_s<=300ms").unwrap().1, Op::Le);
        assert!(split("== 3").unwrap_err().contains("field name"));
        assert!(split("status ~ 3").unwrap_err().contains("operator"));
        assert!(
            split("status ==")
                .unwrap_err()
                .contains("missing the value")
        );
    }

    #[test]
    fn units_read_the_value() {
        assert!(cond("time_s < 300ms", Unit::Seconds).eval(&json!(0.2)));
        assert!(!cond("time_s < 300ms", Unit::Seconds).eval(&json!(0.3)));
        assert!(cond("age_s > 26h", Unit::Seconds).eval(&json!(26.0 * 3600.0 + 1.0)));
        assert!(cond("age_s > 1.5", Unit::Seconds).eval(&json!(2)));
        assert!(cond("free_bytes < 10G", Unit::Bytes).eval(&json!(5u64 << 30)));
        assert!(cond("status == 2xx", Unit::Number).eval(&json!(204)));
        assert!(!cond("status == 2xx", Unit::Number).eval(&json!(302)));
        assert!(cond("status != 5xx", Unit::Number).eval(&json!(404)));
        assert!(cond("trusted == true", Unit::Bool).eval(&json!(true)));
        assert!(cond("body =~ ^ok", Unit::Text).eval(&json!("ok then")));
        assert!(cond("body !~ ^ok", Unit::Text).eval(&json!("not ok")));
        assert!(cond("body contains 'up'", Unit::Text).eval(&json!("all up")));
    }

    #[test]
    fn json_values_compare_by_their_own_type() {
        assert!(cond("json.status == healthy", Unit::Json).eval(&json!("healthy")));
        assert!(!cond("json.status == healthy", Unit::Json).eval(&json!("degraded")));
        assert!(cond("json.db.latency_ms < 50", Unit::Json).eval(&json!(12)));
        assert!(!cond("json.db.latency_ms < 50", Unit::Json).eval(&json!(80)));
        assert!(cond("json.ready == true", Unit::Json).eval(&json!(true)));
        assert!(!cond("json.ready == true", Unit::Json).eval(&json!(false)));
        assert!(!cond("json.n > abc", Unit::Json).eval(&json!(3)));
    }

    #[test]
    fn null_is_false_but_for_null_tests() {
        assert!(!cond("lag_s > 30s", Unit::Seconds).eval(&Value::Null));
        assert!(!cond("lag_s < 30s", Unit::Seconds).eval(&Value::Null));
        assert!(cond("verified == null", Unit::Text).eval(&Value::Null));
        assert!(cond("verified != null", Unit::Text).eval(&json!("x")));
        assert!(!cond("verified != null", Unit::Text).eval(&Value::Null));
        assert!(!cond("json.status == healthy", Unit::Json).eval(&Value::Null));
    }

    #[test]
    fn bad_values_name_the_condition() {
        let err = |t: &str, u: Unit| {
            let (f, op, v) = split(t).unwrap();
            read_rhs(t, &f, u, op, &v).unwrap_err()
        };
        assert!(err("time_s < soon", Unit::Seconds).contains("'soon' is not a duration"));
        assert!(err("free_bytes < lots", Unit::Bytes).contains("not a size"));
        assert!(err("status == ok", Unit::Number).contains("not a number"));
        assert!(err("role < primary", Unit::Text).contains("is text"));
        assert!(err("body =~ (", Unit::Text).contains("bad regex"));
        assert!(err("x > null", Unit::Number).contains("only == and !="));
    }
}
