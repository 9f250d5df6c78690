//! Reading a provider's YAML config file: one line per error, with its
//! position and a message meant for the person who wrote the file (no
//! snippet, no parser-library hints).

use serde::de::DeserializeOwned;

/// A YAML document [`parse_yaml`] refused: one line, `line L column C:
/// what is wrong`, for the caller to prefix with the file's name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct YamlError(String);

impl From<YamlError> for String {
    fn from(e: YamlError) -> Self {
        e.0
    }
}

/// Parses `text` (duplicate keys refused).
pub fn parse_yaml<T: DeserializeOwned>(text: &str) -> Result<T, YamlError> {
    serde_saphyr::from_str(text).map_err(|e| {
        use serde_saphyr::MessageFormatter as _;
        let message = serde_saphyr::UserMessageFormatter.format_message(&e);
        // One line: any later ones only add context.
        let message = message.lines().next().unwrap_or_default().trim();
        YamlError(match e.location().filter(|l| l.line() > 0) {
            Some(l) => format!("line {} column {}: {message}", l.line(), l.column()),
            None => message.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Config {
        name: Option<String>,
        items: Option<Vec<String>>,
    }

    #[test]
    fn errors_are_one_line_with_a_position_and_no_library_hints() {
        for (text, want) in [
            (
                "name: a\nnam: b\n",
                "unknown field `nam`, expected one of name, items",
            ),
            (
                "name: a\nname: b\n",
                "duplicate mapping key `name` is not allowed here",
            ),
            ("items: 5\n", "items"),
        ] {
            let err = parse_yaml::<Config>(text).unwrap_err().to_string();
            assert!(!err.contains('\n') && !err.contains("Options"), "{err}");
            assert!(err.contains("line "), "a position: {err}");
            if want != "items" {
                assert!(err.contains(want), "{text:?}: {err}");
            }
        }
    }
}
