//! The allocation table on disk, read per the documented format.

use std::path::Path;

/// The allocation table in `state`, read per the documented format: the rows of
/// `allocations.json` (the base), then each complete line of `allocations.log` in order, a host's
/// whole new row (or, with `"removed": true`, its removal). A cut last line (no newline: an
/// append a crash interrupted) is not part of the table. Panics on anything that does not parse.
pub fn store_rows(state: &Path) -> std::collections::BTreeMap<String, serde_json::Value> {
    let mut rows = std::collections::BTreeMap::new();
    let base = state.join("allocations.json");
    match std::fs::read_to_string(&base) {
        Ok(text) => {
            let v: serde_json::Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}\n{text}", base.display()));
            assert_eq!(v["format"], "globaldns-allocations/v1", "{text}");
            for row in v["allocations"].as_array().expect("allocations array") {
                let host = row["host"].as_str().expect("host").to_string();
                assert!(
                    rows.insert(host.clone(), row.clone()).is_none(),
                    "{host} listed twice:\n{text}"
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => panic!("{}: {e}", base.display()),
    }
    let log = state.join("allocations.log");
    let text = match std::fs::read_to_string(&log) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return rows,
        Err(e) => panic!("{}: {e}", log.display()),
    };
    let complete = text.rfind('\n').map_or(0, |i| i + 1);
    for line in text[..complete].lines().filter(|l| !l.is_empty()) {
        let row: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}: line {line:?} does not parse: {e}", log.display()));
        let host = row["host"].as_str().expect("host").to_string();
        if row.get("removed").and_then(|r| r.as_bool()) == Some(true) {
            rows.remove(&host);
        } else {
            rows.insert(host, row);
        }
    }
    rows
}
