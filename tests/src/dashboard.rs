//! The Grafana dashboard's check (#32): every panel's PromQL expression
//! parses (`promtool check rules` on a rules file that records each one),
//! and every metric it names is one the tools wrote in a real run.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// `monitoring/opskit-dashboard.json`.
pub fn load() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../monitoring/opskit-dashboard.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every panel's (title, expression), rows' panels included.
pub fn exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((title.clone(), e.to_string()));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// The metric names a PromQL expression reads: identifiers outside label
/// matchers, ranges and strings that are neither functions nor keywords,
/// nor the label lists after `by`, `without`, `on`, `ignoring`, `group_*`.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: [&str; 11] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ];
    // Aggregations may take `by (…)` before their parentheses.
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    let b = expr.as_bytes();
    let (mut i, mut out) = (0, BTreeSet::new());
    let mut skip_list = false;
    while i < b.len() {
        let c = b[i] as char;
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < b.len() && b[i] as char != c {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            '{' | '[' => {
                let close = if c == '{' { '}' } else { ']' };
                while i < b.len() && b[i] as char != close {
                    i += 1;
                }
                i += 1;
            }
            '(' if skip_list => {
                while i < b.len() && b[i] != b')' {
                    i += 1;
                }
                skip_list = false;
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':')
                {
                    i += 1;
                }
                let word = &expr[start..i];
                let next = expr[i..].trim_start().chars().next();
                if KEYWORDS.contains(&word) {
                    skip_list = !matches!(word, "and" | "or" | "unless" | "bool" | "offset");
                } else if next != Some('(') && !AGGREGATIONS.contains(&word) {
                    out.insert(word.to_string());
                }
            }
            c if c.is_ascii_digit() => {
                // A number or a duration (5m, 1e3): not a name.
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    out
}

/// The metric names in Prometheus text files (`name{labels} value`).
pub fn written(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let name = line.split(['{', ' ']).next().unwrap();
            out.insert(name.to_string());
        }
    }
    out
}

/// What is wrong with `dashboard`: a panel naming a metric not in
/// `written`, an expression promtool does not accept, a panel not on the
/// `DS_PROMETHEUS` input. Empty when it is right.
pub fn problems(dashboard: &Value, written: &BTreeSet<String>, scratch: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let inputs = dashboard["__inputs"].to_string();
    if !inputs.contains("\"DS_PROMETHEUS\"") {
        out.push("no DS_PROMETHEUS datasource input".to_string());
    }
    let exprs = exprs(dashboard);
    if exprs.is_empty() {
        out.push("no panel has an expression".to_string());
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (title, e)) in exprs.iter().enumerate() {
        for m in metric_names(e) {
            if !written.contains(&m) {
                out.push(format!(
                    "panel '{title}': {m} is not a metric opskit writes ({e})"
                ));
            }
        }
        // Grafana's variable, as Grafana expands it for "All".
        let e = e.replace("$instance", ".*");
        rules.push_str(&format!(
            "      - record: opskit:dashboard:panel_{n}\n        expr: {}\n",
            serde_json::to_string(&e).unwrap()
        ));
    }
    let file = scratch.join("dashboard.rules.yml");
    std::fs::write(&file, rules).unwrap();
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool (Debian's prometheus package; make test installs it)");
    if !check.status.success() {
        out.push(format!(
            "promtool check rules: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        ));
    }
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        if p["type"] != "row" && p["datasource"]["uid"] != "${DS_PROMETHEUS}" {
            out.push(format!(
                "panel '{}' is not on ${{DS_PROMETHEUS}}",
                p["title"]
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_expressions() {
        let n = |e| metric_names(e).into_iter().collect::<Vec<_>>();
        assert_eq!(
            n(r#"time() - opskit_a_seconds{instance=~"$instance", x="y{z}"}"#),
            ["opskit_a_seconds"]
        );
        assert_eq!(
            n("max by (instance) (rate(opskit_b_bytes[15m])) > on (instance) opskit_c + 1e3"),
            ["opskit_b_bytes", "opskit_c"]
        );
        assert_eq!(
            n("increase(opskit_d_total[1h]) or vector(0)"),
            ["opskit_d_total"]
        );
    }
}
