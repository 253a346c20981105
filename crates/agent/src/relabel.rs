//! Prometheus relabeling (`relabel_configs`).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use regex::Regex;
use serde::{Deserialize, Deserializer};

pub type LabelMap = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    #[serde(alias = "keepEqual")]
    Keepequal,
    #[serde(alias = "dropEqual")]
    Dropequal,
    Hashmod,
    Labelmap,
    Labeldrop,
    Labelkeep,
    Lowercase,
    Uppercase,
}

/// An anchored regular expression as in Prometheus (`^(?:...)$`).
#[derive(Debug, Clone)]
pub struct AnchoredRegex {
    pub source: String,
    pub regex: Regex,
}

impl AnchoredRegex {
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Ok(Self {
            source: source.to_string(),
            regex: Regex::new(&format!("^(?s:{source})$"))?,
        })
    }
}

impl Default for AnchoredRegex {
    fn default() -> Self {
        Self {
            source: "(.*)".to_string(),
            #[allow(clippy::expect_used)]
            regex: Regex::new("^(?s:(.*))$").expect("a constant regex compiles"),
        }
    }
}

impl<'de> Deserialize<'de> for AnchoredRegex {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        AnchoredRegex::new(&source).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: AnchoredRegex,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        Self {
            source_labels: Vec::new(),
            separator: ";".to_string(),
            regex: AnchoredRegex::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: "$1".to_string(),
            action: Action::Replace,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("relabel_configs: {0}")]
pub struct RelabelError(String);

impl RelabelConfig {
    pub fn validate(&self) -> Result<(), RelabelError> {
        let needs_target = matches!(
            self.action,
            Action::Replace
                | Action::Hashmod
                | Action::Lowercase
                | Action::Uppercase
                | Action::Keepequal
                | Action::Dropequal
        );
        if needs_target && self.target_label.is_empty() {
            return Err(RelabelError(format!(
                "relabel action {:?} requires target_label",
                self.action
            )));
        }
        if self.action == Action::Hashmod && self.modulus == 0 {
            return Err(RelabelError(
                "relabel action hashmod requires a non-zero modulus".to_string(),
            ));
        }
        Ok(())
    }
}

/// Applies `configs` in order; `None` when the target is dropped.
pub fn relabel(mut labels: LabelMap, configs: &[RelabelConfig]) -> Option<LabelMap> {
    for config in configs {
        if !apply(&mut labels, config) {
            return None;
        }
    }
    Some(labels)
}

fn apply(labels: &mut LabelMap, c: &RelabelConfig) -> bool {
    let value = c
        .source_labels
        .iter()
        .map(|name| labels.get(name).map(String::as_str).unwrap_or(""))
        .collect::<Vec<_>>()
        .join(&c.separator);
    match c.action {
        Action::Drop => {
            if c.regex.regex.is_match(&value) {
                return false;
            }
        }
        Action::Keep => {
            if !c.regex.regex.is_match(&value) {
                return false;
            }
        }
        Action::Keepequal => {
            if labels
                .get(&c.target_label)
                .map(String::as_str)
                .unwrap_or("")
                != value
            {
                return false;
            }
        }
        Action::Dropequal => {
            if labels
                .get(&c.target_label)
                .map(String::as_str)
                .unwrap_or("")
                == value
            {
                return false;
            }
        }
        Action::Replace => {
            if let Some(caps) = c.regex.regex.captures(&value) {
                let mut target = String::new();
                caps.expand(&c.target_label, &mut target);
                if !lucia_common::labels::is_valid_label_name(&target) {
                    return true;
                }
                let mut result = String::new();
                caps.expand(&c.replacement, &mut result);
                if result.is_empty() {
                    labels.remove(&target);
                } else {
                    labels.insert(target, result);
                }
            }
        }
        Action::Lowercase => {
            labels.insert(c.target_label.clone(), value.to_lowercase());
        }
        Action::Uppercase => {
            labels.insert(c.target_label.clone(), value.to_uppercase());
        }
        Action::Hashmod => {
            let digest = Md5::digest(value.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest[8..16]);
            let hash = u64::from_be_bytes(tail);
            labels.insert(
                c.target_label.clone(),
                (hash % c.modulus.max(1)).to_string(),
            );
        }
        Action::Labelmap => {
            let mapped: Vec<(String, String)> = labels
                .iter()
                .filter_map(|(name, v)| {
                    let caps = c.regex.regex.captures(name)?;
                    let mut new_name = String::new();
                    caps.expand(&c.replacement, &mut new_name);
                    Some((new_name, v.clone()))
                })
                .collect();
            labels.extend(mapped);
        }
        Action::Labeldrop => labels.retain(|name, _| !c.regex.regex.is_match(name)),
        Action::Labelkeep => labels.retain(|name, _| c.regex.regex.is_match(name)),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(yaml: &str) -> Vec<RelabelConfig> {
        lucia_common::config::parse(std::path::Path::new("t.yaml"), yaml).unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replace_keep_drop_labelmap() {
        let configs = cfg(r#"
- source_labels: [__path__]
  regex: '/var/log/(\w+)\.log'
  target_label: app
- source_labels: [app]
  regex: nginx|api
  action: keep
- regex: __meta_(.+)
  action: labelmap
- regex: __meta_.*
  action: labeldrop
- source_labels: [app]
  target_label: APP
  action: uppercase
"#);
        let out = relabel(
            labels(&[("__path__", "/var/log/api.log"), ("__meta_zone", "eu")]),
            &configs,
        )
        .unwrap();
        assert_eq!(
            out,
            labels(&[
                ("__path__", "/var/log/api.log"),
                ("app", "api"),
                ("zone", "eu"),
                ("APP", "API")
            ])
        );
        assert!(relabel(labels(&[("__path__", "/var/log/db.log")]), &configs).is_none());
    }

    #[test]
    fn hashmod_and_equal() {
        let configs =
            cfg("- source_labels: [a]\n  modulus: 8\n  target_label: shard\n  action: hashmod\n");
        let out = relabel(labels(&[("a", "x")]), &configs).unwrap();
        let shard: u64 = out["shard"].parse().unwrap();
        assert!(shard < 8);
        let again = relabel(labels(&[("a", "x")]), &configs).unwrap();
        assert_eq!(out, again);
        let keep = cfg("- source_labels: [a]\n  target_label: b\n  action: keepequal\n");
        assert!(relabel(labels(&[("a", "1"), ("b", "1")]), &keep).is_some());
        assert!(relabel(labels(&[("a", "1"), ("b", "2")]), &keep).is_none());
    }

    #[test]
    fn replace_with_empty_result_deletes() {
        let configs =
            cfg("- source_labels: [x]\n  regex: ''\n  target_label: a\n  replacement: ''\n");
        let out = relabel(labels(&[("a", "1")]), &configs).unwrap();
        assert!(!out.contains_key("a"));
    }
}
