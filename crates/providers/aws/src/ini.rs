//! The gcfg dialect of INI that cloud-provider-aws reads its cloud config in
//! (gopkg.in/gcfg.v1): `[Section]` and `[Section "subsection"]` headers,
//! `Key = value` lines, `;` and `#` comments, double-quoted values with
//! `\"`, `\\`, `\n` and `\t` escapes. Section and key names are
//! case-insensitive; a key without `= value` is a boolean `true`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// As written (for messages); compare with `eq_ignore_ascii_case`.
    pub key: String,
    pub value: String,
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    pub subsection: Option<String>,
    pub line: usize,
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct IniError {
    pub line: usize,
    pub message: String,
}

pub fn parse(text: &str) -> Result<Vec<Section>, IniError> {
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let err = |message: String| IniError { line, message };
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with(';') || trimmed.starts_with('#') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let header = rest
                .strip_suffix(']')
                .ok_or_else(|| err(format!("section header {trimmed:?} lacks a closing ]")))?
                .trim();
            let (name, subsection) = match header.split_once(char::is_whitespace) {
                None => (header.to_string(), None),
                Some((name, sub)) => {
                    let sub = sub.trim();
                    let inner = sub
                        .strip_prefix('"')
                        .and_then(|s| s.strip_suffix('"'))
                        .ok_or_else(|| {
                            err(format!("subsection name {sub:?} must be double-quoted"))
                        })?;
                    (name.to_string(), Some(unescape(inner).map_err(err)?))
                }
            };
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            {
                return Err(err(format!("invalid section name {name:?}")));
            }
            sections.push(Section {
                name,
                subsection,
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let section = sections
            .last_mut()
            .ok_or_else(|| err("a key outside any [section]".into()))?;
        let (key, value) = match trimmed.split_once('=') {
            Some((k, v)) => (k.trim(), value_of(v.trim()).map_err(err)?),
            None => (trimmed, "true".to_string()),
        };
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(err(format!("invalid key name {key:?}")));
        }
        section.entries.push(Entry {
            key: key.to_string(),
            value,
            line,
        });
    }
    Ok(sections)
}

/// A value: quoted parts unescaped, unquoted parts up to a comment, trimmed.
fn value_of(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = v.chars().peekable();
    let mut quoted = false;
    let mut pending_space = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            ';' | '#' if !quoted => break,
            '\\' => {
                let next = chars.next().ok_or("a value ends in a lone backslash")?;
                out.push_str(&pending_space);
                pending_space.clear();
                out.push(match next {
                    '"' => '"',
                    '\\' => '\\',
                    'n' => '\n',
                    't' => '\t',
                    other => return Err(format!("unknown escape \\{other}")),
                });
            }
            c if c.is_whitespace() && !quoted => pending_space.push(c),
            c => {
                out.push_str(&pending_space);
                pending_space.clear();
                out.push(c);
            }
        }
    }
    if quoted {
        return Err("a quoted value is not closed".into());
    }
    Ok(out)
}

fn unescape(s: &str) -> Result<String, String> {
    value_of(&format!("\"{s}\""))
}

/// gcfg's booleans.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Some(true),
        "false" | "no" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_subsections_keys_and_comments() {
        let text = r#"
; a comment
[Global]
Zone = us-east-1a   # trailing comment
KubernetesClusterID="my cluster"
DisableStrictZoneCheck

[ServiceOverride "1"]
Service = ec2
URL = "http://127.0.0.1:5000/path;x"
"#;
        let s = parse(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "Global");
        assert_eq!(s[0].entries[0].value, "us-east-1a");
        assert_eq!(s[0].entries[1].value, "my cluster");
        assert_eq!(s[0].entries[2].value, "true");
        assert_eq!(s[1].subsection.as_deref(), Some("1"));
        assert_eq!(s[1].entries[1].value, "http://127.0.0.1:5000/path;x");
        assert_eq!(s[1].entries[1].line, 10);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, want) in [
            ("Zone = a", "line 1: a key outside any [section]"),
            (
                "[Global\n",
                "line 1: section header \"[Global\" lacks a closing ]",
            ),
            (
                "[Global]\nZone = \"a",
                "line 2: a quoted value is not closed",
            ),
            (
                "[ServiceOverride 1]",
                "line 1: subsection name \"1\" must be double-quoted",
            ),
            (
                "[Global]\nbad key = 1",
                "line 2: invalid key name \"bad key\"",
            ),
        ] {
            assert_eq!(parse(text).unwrap_err().to_string(), want, "{text}");
        }
    }

    #[test]
    fn booleans_as_gcfg_reads_them() {
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
