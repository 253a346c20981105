//! Prometheus relabeling (`relabel_configs`, `metric_relabel_configs`),
//! shared by the agent (Promtail's targets) and the tsdb scraper.
//!
//! Semantics follow Prometheus' `model/relabel`: source label values are
//! joined with `separator`, regexes are anchored, a label set to the empty
//! string is removed, and `hashmod` is the MD5 of the joined values, its last
//! eight bytes read big-endian, modulo `modulus`. Label names are checked
//! with the legacy (`[a-zA-Z_][a-zA-Z0-9_]*`) scheme.

use std::collections::BTreeMap;

use md5::{Digest, Md5};

use crate::labels::is_valid_label_name;
use regex::Regex;
use serde::{Deserialize, Deserializer};

pub type LabelMap = BTreeMap<String, String>;

/// A relabel action. Parsed case-insensitively, as Prometheus does
/// (`keepEqual`, `LabelMap` and `labelmap` are the same action).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    #[default]
    Replace,
    Keep,
    Drop,
    Keepequal,
    Dropequal,
    Hashmod,
    Labelmap,
    Labeldrop,
    Labelkeep,
    Lowercase,
    Uppercase,
}

impl Action {
    pub const ALL: [Action; 11] = [
        Action::Replace,
        Action::Keep,
        Action::Drop,
        Action::Keepequal,
        Action::Dropequal,
        Action::Hashmod,
        Action::Labelmap,
        Action::Labeldrop,
        Action::Labelkeep,
        Action::Lowercase,
        Action::Uppercase,
    ];

    /// Prometheus' spelling of the action.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::Keepequal => "keepequal",
            Action::Dropequal => "dropequal",
            Action::Hashmod => "hashmod",
            Action::Labelmap => "labelmap",
            Action::Labeldrop => "labeldrop",
            Action::Labelkeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let lower = text.to_lowercase();
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == lower)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown relabel action {text:?}: use one of replace, keep, drop, keepequal, \
                     dropequal, hashmod, labelmap, labeldrop, labelkeep, lowercase, uppercase"
                ))
            })
    }
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
    /// Prometheus' checks of one rule (`Config.Validate`), with its messages.
    pub fn validate(&self) -> Result<(), RelabelError> {
        let fail = |message: String| Err(RelabelError(message));
        let action = self.action;
        if action == Action::Hashmod && self.modulus == 0 {
            return fail("relabel configuration for hashmod requires non-zero modulus".into());
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::Hashmod
                | Action::Lowercase
                | Action::Uppercase
                | Action::Keepequal
                | Action::Dropequal
        );
        if needs_target && self.target_label.is_empty() {
            return fail(format!(
                "relabel configuration for {action} action requires 'target_label' value"
            ));
        }
        let plain_target = matches!(
            action,
            Action::Hashmod
                | Action::Lowercase
                | Action::Uppercase
                | Action::Keepequal
                | Action::Dropequal
        );
        let target_ok = if action == Action::Replace {
            is_valid_label_name_template(&self.target_label)
        } else {
            is_valid_label_name(&self.target_label)
        };
        if (plain_target || action == Action::Replace) && !target_ok {
            return fail(format!(
                "{:?} is invalid 'target_label' for {action} action",
                self.target_label
            ));
        }
        let defaults = RelabelConfig::default();
        if matches!(
            action,
            Action::Lowercase | Action::Uppercase | Action::Keepequal | Action::Dropequal
        ) && self.replacement != defaults.replacement
        {
            return fail(format!("'replacement' can not be set for {action} action"));
        }
        if action == Action::Labelmap && !is_valid_label_name_template(&self.replacement) {
            return fail(format!(
                "{:?} is invalid 'replacement' for {action} action",
                self.replacement
            ));
        }
        if matches!(action, Action::Keepequal | Action::Dropequal)
            && (self.regex.source != defaults.regex.source
                || self.modulus != 0
                || self.separator != defaults.separator)
        {
            return fail(format!(
                "{action} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, Action::Labeldrop | Action::Labelkeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != defaults.separator
                || self.replacement != defaults.replacement)
        {
            return fail(format!(
                "{action} action requires only 'regex', and no other fields"
            ));
        }
        Ok(())
    }
}

/// A label name that may hold `$1`, `${name}` references (Prometheus'
/// `relabelTargetLegacy`).
fn is_valid_label_name_template(name: &str) -> bool {
    if !name.contains('$') {
        return is_valid_label_name(name);
    }
    static TEMPLATE: std::sync::LazyLock<Option<Regex>> =
        std::sync::LazyLock::new(|| Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").ok());
    TEMPLATE.as_ref().is_some_and(|re| re.is_match(name))
}

/// Sets `name` to `value`; the empty value removes the label, as
/// Prometheus' `labels.Builder.Set` does.
fn set(labels: &mut LabelMap, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_string(), value);
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
                if !is_valid_label_name(&target) {
                    return true;
                }
                let mut result = String::new();
                caps.expand(&c.replacement, &mut result);
                set(labels, &target, result);
            }
        }
        Action::Lowercase => set(labels, &c.target_label, value.to_lowercase()),
        Action::Uppercase => set(labels, &c.target_label, value.to_uppercase()),
        Action::Hashmod => {
            let digest = Md5::digest(value.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&digest[8..16]);
            let hash = u64::from_be_bytes(tail);
            set(
                labels,
                &c.target_label,
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
            for (name, v) in mapped {
                set(labels, &name, v);
            }
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
        crate::config::parse(std::path::Path::new("t.yaml"), yaml).unwrap()
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

    #[test]
    fn hashmod_matches_prometheus() {
        // Expected values from Prometheus' model/relabel/relabel_test.go.
        let configs =
            cfg("- source_labels: [c]\n  modulus: 1000\n  target_label: d\n  action: hashmod\n");
        let out = relabel(labels(&[("c", "baz")]), &configs).unwrap();
        assert_eq!(out["d"], "976");
        let configs =
            cfg("- source_labels: [a]\n  modulus: 1000\n  target_label: b\n  action: hashmod\n");
        let out = relabel(labels(&[("a", "foo\nbar")]), &configs).unwrap();
        assert_eq!(out["b"], "734");
    }

    #[test]
    fn every_action() {
        let base = labels(&[("a", "Foo"), ("b", "Foo"), ("__meta_x", "1"), ("c", "bar")]);
        let run = |yaml: &str| relabel(base.clone(), &cfg(yaml));
        // keep / drop on the joined source values.
        assert!(run("- {source_labels: [a, c], regex: 'Foo;bar', action: keep}").is_some());
        assert!(run("- {source_labels: [a, c], regex: 'Foo', action: keep}").is_none());
        assert!(run("- {source_labels: [c], regex: 'b.*', action: drop}").is_none());
        assert!(run("- {source_labels: [zz], regex: '', action: drop}").is_none());
        // keepequal / dropequal compare with target_label's value.
        assert!(run("- {source_labels: [a], target_label: b, action: keepequal}").is_some());
        assert!(run("- {source_labels: [a], target_label: c, action: keepequal}").is_none());
        assert!(run("- {source_labels: [a], target_label: b, action: dropequal}").is_none());
        assert!(run("- {source_labels: [a], target_label: c, action: dropEqual}").is_some());
        // lowercase / uppercase; an empty result removes the label.
        let out = run("- {source_labels: [a], target_label: low, action: Lowercase}").unwrap();
        assert_eq!(out["low"], "foo");
        let out = run("- {source_labels: [c], target_label: up, action: UPPERCASE}").unwrap();
        assert_eq!(out["up"], "BAR");
        let out = run("- {source_labels: [nope], target_label: a, action: lowercase}").unwrap();
        assert!(!out.contains_key("a"));
        // labelmap copies, labeldrop / labelkeep filter names.
        let out = run("- {regex: '__meta_(.*)', replacement: 'm_$1', action: labelmap}").unwrap();
        assert_eq!(out["m_x"], "1");
        assert!(out.contains_key("__meta_x"));
        let out = run("- {regex: '__.*', action: labeldrop}").unwrap();
        assert_eq!(out.len(), 3);
        let out = run("- {regex: 'a|b', action: labelkeep}").unwrap();
        assert_eq!(out.keys().cloned().collect::<Vec<_>>(), vec!["a", "b"]);
        // replace with a templated target; an invalid target is skipped.
        let out = run(
            "- {source_labels: [c], regex: '(b)(.*)', target_label: 'x_$1', replacement: '$2'}",
        )
        .unwrap();
        assert_eq!(out["x_b"], "ar");
        let out =
            run("- {source_labels: [c], regex: '(.*)', target_label: '${1}-', replacement: 'v'}");
        assert_eq!(out.unwrap(), base);
        // a non-matching regex leaves the labels alone.
        let out =
            run("- {source_labels: [c], regex: 'nomatch', target_label: c, replacement: 'z'}");
        assert_eq!(out.unwrap(), base);
    }

    #[test]
    fn validation_follows_prometheus() {
        let invalid = |yaml: &str| -> String {
            let rules: Vec<RelabelConfig> = cfg(yaml);
            rules[0].validate().unwrap_err().to_string()
        };
        assert!(invalid("- {action: hashmod, target_label: x}").contains("non-zero modulus"));
        assert!(invalid("- {action: replace}").contains("requires 'target_label'"));
        assert!(
            invalid("- {action: lowercase, target_label: '1x'}").contains("invalid 'target_label'")
        );
        assert!(
            invalid("- {action: keepequal, target_label: x, regex: 'a'}")
                .contains("requires only 'source_labels'")
        );
        assert!(
            invalid("- {action: labeldrop, source_labels: [a], regex: 'a'}")
                .contains("requires only 'regex'")
        );
        assert!(
            invalid("- {action: uppercase, target_label: x, replacement: y}")
                .contains("'replacement' can not be set")
        );
        let ok: Vec<RelabelConfig> = cfg("- {action: replace, target_label: 'x_${1}'}");
        assert!(ok[0].validate().is_ok());
        let err = crate::config::parse::<Vec<RelabelConfig>>(
            std::path::Path::new("t.yaml"),
            "- {action: explode}",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown relabel action"), "{err}");
    }
}
