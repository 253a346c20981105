//! YAML config loading (serde-saphyr) with optional `${VAR}` expansion.
//!
//! Errors name the file, the line and column, and the field.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Reads and parses `path`. With `expand_env`, `${VAR}` and
/// `${VAR:-default}` are replaced by environment variables first (`$$` is a
/// literal `$`), as Loki's `-config.expand-env` does.
pub fn load<T: DeserializeOwned>(path: &Path, expand_env: bool) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = if expand_env {
        expand_env_vars(&text, |name| std::env::var(name).ok())
    } else {
        text
    };
    parse(path, &text)
}

/// Parses YAML `text` that came from `path`.
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    // An empty file is an empty mapping: every field takes its default.
    let text = if text.trim().is_empty() { "{}" } else { text };
    serde_saphyr::from_str(text).map_err(|err| ConfigError::Parse {
        path: path.to_path_buf(),
        message: err.to_string(),
    })
}

/// Replaces `${VAR}` and `${VAR:-default}`; `$$` becomes `$`. Unset
/// variables without a default become empty, as in Loki.
pub fn expand_env_vars(text: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
        {
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (expr, None),
            };
            let value = lookup(name)
                .filter(|v| !v.is_empty() || default.is_none())
                .or_else(|| default.map(str::to_string))
                .unwrap_or_default();
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: String,
        #[serde(default)]
        inner: Inner,
    }

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        #[serde(default)]
        count: u32,
    }

    #[test]
    fn expands_variables() {
        let lookup = |name: &str| (name == "HOST").then(|| "db".to_string());
        assert_eq!(expand_env_vars("a: ${HOST}:1", lookup), "a: db:1");
        assert_eq!(expand_env_vars("a: ${PORT:-5432}", lookup), "a: 5432");
        assert_eq!(expand_env_vars("a: ${NOPE}", lookup), "a: ");
        assert_eq!(expand_env_vars("a: $$HOST $x", lookup), "a: $HOST $x");
    }

    #[test]
    fn errors_name_file_line_and_field() {
        let path = Path::new("/etc/lucia.yaml");
        let parsed: Sample = parse(path, "name: x\ninner:\n  count: 3\n").unwrap();
        assert_eq!(parsed.inner.count, 3);
        let err = parse::<Sample>(path, "name: x\ninner:\n  cuont: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/lucia.yaml"), "{err}");
        assert!(err.contains("cuont"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        let err = parse::<Sample>(path, "name: x\ninner:\n  count: many\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
    }
}
