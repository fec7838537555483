//! The line protocol between the guest `/init` and the host, read from the serial console.
//!
//! Every line the host acts on starts with `MIGTRACE-VM-<KIND>` followed by `key=value`
//! words; a `reason=` or `detail=` key, always last, takes the rest of the line. Test output
//! reaches the console prefixed with `<test>| `, so it can never start such a line.
//!
//! ```text
//! MIGTRACE-VM-BOOTED kernel=6.1.0-56-amd64 uptime=1.52
//! MIGTRACE-VM-FEATURE name=softdirty status=yes detail=...
//! MIGTRACE-VM-PROBED uptime=1.90
//! MIGTRACE-VM-BEGIN name=migtrace-version uptime=1.91
//! MIGTRACE-VM-RESULT name=migtrace-version status=pass|fail|skip rc=0 secs=0.05 reason=...
//! MIGTRACE-VM-DONE uptime=2.40
//! ```
use std::collections::BTreeMap;

pub const MARK: &str = "MIGTRACE-VM-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

impl Message {
    pub fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }
}

/// Parses one console line; `None` for anything that is not a protocol line.
pub fn parse(line: &str) -> Option<Message> {
    let rest = line.strip_prefix(MARK)?;
    let (kind, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
    if kind.is_empty() || !kind.chars().all(|c| c.is_ascii_uppercase()) {
        return None;
    }
    let mut fields = BTreeMap::new();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key.trim();
        if key == "reason" || key == "detail" {
            fields.insert(key.to_string(), after.trim().to_string());
            break;
        }
        let (value, next) = after.split_once(' ').unwrap_or((after, ""));
        fields.insert(key.to_string(), value.to_string());
        rest = next;
    }
    Some(Message {
        kind: kind.to_string(),
        fields,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_line() {
        let m =
            parse("MIGTRACE-VM-RESULT name=a-b status=skip rc=- secs=0 reason=lacks: x y").unwrap();
        assert_eq!(m.kind, "RESULT");
        assert_eq!(m.get("name"), "a-b");
        assert_eq!(m.get("status"), "skip");
        assert_eq!(m.get("reason"), "lacks: x y");
    }

    #[test]
    fn done_and_noise() {
        assert_eq!(parse("MIGTRACE-VM-DONE").unwrap().kind, "DONE");
        assert_eq!(
            parse("MIGTRACE-VM-DONE uptime=3.1").unwrap().get("uptime"),
            "3.1"
        );
        assert!(parse("t| MIGTRACE-VM-DONE").is_none());
        assert!(parse("[    1.0] random kernel line").is_none());
    }
}
