//! Checks files: a JSON array, or one JSON object per line.

use crate::spec::{Check, Def, Defaults, build};

/// Read a checks file: a JSON array, or one JSON object per line (blank
/// lines and `#` comments allowed). A syntax error names file:line.
pub fn read_checks_file(text: &str, file: &str, d: &Defaults) -> Result<Vec<Check>, String> {
    let trimmed = text.trim_start();
    let mut out = vec![];
    if trimmed.starts_with('[') {
        let defs: Vec<serde_json::Value> = serde_json::from_str(text)
            .map_err(|e| format!("{file}:{}: {}", e.line(), strip_pos(&e.to_string())))?;
        for (i, v) in defs.into_iter().enumerate() {
            out.push(from_value(v, &format!("{file}: check {}", i + 1), d));
        }
        return Ok(out);
    }
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(l)
            .map_err(|e| format!("{file}:{}: {}", i + 1, strip_pos(&e.to_string())))?;
        out.push(from_value(v, &format!("{file}:{}", i + 1), d));
    }
    Ok(out)
}

fn from_value(v: serde_json::Value, at: &str, d: &Defaults) -> Check {
    let target = v
        .get("target")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string();
    let v_name = v.get("name").and_then(|n| n.as_str()).map(str::to_string);
    match serde_json::from_value::<Def>(v) {
        Ok(def) => {
            let mut c = build(def, d);
            if let Some(e) = c.invalid.take() {
                c.invalid = Some(format!("{at}: {e}"));
            }
            c
        }
        Err(e) => {
            // Named by its place when it has no name of its own: entries
            // without a usable target would all be named '' and clash.
            let name = v_name.unwrap_or_else(|| at.to_string());
            let mut c = build(
                Def {
                    name: Some(name),
                    target: target.clone(),
                    ..Def::default()
                },
                d,
            );
            c.invalid = Some(format!("{at}: {}", strip_pos(&e.to_string())));
            c
        }
    }
}

fn strip_pos(msg: &str) -> String {
    match msg.rfind(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::HttpOpts;
    use std::time::Duration;

    fn defaults() -> Defaults {
        Defaults {
            timeout: Duration::from_secs(10),
            http: HttpOpts::default(),
            database: None,
        }
    }

    #[test]
    fn checks_file_errors_name_the_line() {
        let d = defaults();
        let text = "# checks\n{\"target\": \"disk:/\"}\n\n{\"target\": \"http://x/\", \n";
        let e = read_checks_file(text, "c.ndjson", &d).unwrap_err();
        assert!(e.starts_with("c.ndjson:4: "), "{e}");
        let checks = read_checks_file(
            "{\"target\":\"disk:/\",\"expect\":\"nope == 1\"}\n{\"target\":\"disk:/\",\"bogus\":1}",
            "f",
            &d,
        )
        .unwrap();
        assert!(
            checks[0]
                .invalid
                .as_ref()
                .unwrap()
                .starts_with("f:1: condition 'nope == 1'")
        );
        assert!(
            checks[1]
                .invalid
                .as_ref()
                .unwrap()
                .contains("unknown field `bogus`")
        );
        let e = read_checks_file(
            "[\n{\"target\": \"disk:/\"},\n{\"target\" \"x\"}\n]",
            "a.json",
            &d,
        )
        .unwrap_err();
        assert!(e.starts_with("a.json:3: "), "{e}");
        let checks = read_checks_file(
            "[{\"target\": \"disk:/\"}, {\"target\": \"tcp://h:1\"}]",
            "a.json",
            &d,
        )
        .unwrap();
        assert_eq!(checks.len(), 2);
    }
}
