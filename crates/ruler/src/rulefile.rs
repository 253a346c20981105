//! Rule files in Prometheus' format (`groups:` of recording and alerting
//! rules), plus Lucia's per-group `type: promql|logql`.
//!
//! Parsing is strict (unknown fields are errors, as Prometheus'
//! `UnmarshalStrict`), and every error names the file, the group, the rule
//! and the line.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use lucia_common::duration::parse_prometheus_duration;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::template;

/// The language of a group's expressions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Language {
    /// Evaluated by tsdb through the Prometheus HTTP API.
    #[default]
    Promql,
    /// Evaluated by the querier through the Loki HTTP API.
    Logql,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::Promql => "promql",
            Language::Logql => "logql",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    #[serde(default)]
    groups: Vec<Spanned<GroupDef>>,
}

/// A rule group as written in a file (before validation).
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct GroupDef {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub interval: Option<String>,
    #[serde(default)]
    pub query_offset: Option<String>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `promql` (default) or `logql`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub rules: Vec<Spanned<RuleDef>>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RuleDef {
    #[serde(default)]
    pub record: Option<String>,
    #[serde(default)]
    pub alert: Option<String>,
    #[serde(default)]
    pub expr: Option<String>,
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    #[serde(default)]
    pub keep_firing_for: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What a rule does.
#[derive(Debug, Clone, PartialEq)]
pub enum RuleKind {
    Recording,
    Alerting,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub kind: RuleKind,
    /// The `record` or `alert` name.
    pub name: String,
    pub expr: String,
    pub for_: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// 1-based line of the rule in its file (0 when unknown).
    pub line: u64,
}

/// A validated rule group.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    /// The file (or `<namespace>` of the Loki ruler API) the group is from.
    pub file: String,
    pub name: String,
    /// The evaluation interval; `None` takes the global one.
    pub interval: Option<Duration>,
    pub query_offset: Duration,
    /// 0 for no limit.
    pub limit: u64,
    pub labels: BTreeMap<String, String>,
    pub language: Language,
    pub rules: Vec<Rule>,
    /// The group as written (kept to be served back by the Loki ruler API).
    pub source: GroupDef,
}

impl RuleGroup {
    pub fn interval_or(&self, default: Duration) -> Duration {
        self.interval.unwrap_or(default)
    }
}

/// A rule file error: where and what.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct RuleError {
    pub file: String,
    pub line: u64,
    pub group: Option<String>,
    /// The rule's 1-based index in its group and its name.
    pub rule: Option<(usize, String)>,
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        f.write_str(": ")?;
        if let Some(group) = &self.group {
            write!(f, "group {group:?}, ")?;
        }
        if let Some((index, name)) = &self.rule {
            write!(f, "rule {index}, {name:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Reads and validates a rule file.
pub fn load_file(
    path: &Path,
    default_language: Language,
) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![RuleError {
            file: file.clone(),
            line: 0,
            group: None,
            rule: None,
            message: format!("cannot read rule file: {e}"),
        }]
    })?;
    parse_file(&file, &text, default_language)
}

fn yaml_error(file: &str, err: serde_saphyr::Error) -> RuleError {
    let message = err.to_string();
    // serde-saphyr puts "line N column M" in its message; pull the line out.
    let line = message
        .split("line ")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0);
    RuleError {
        file: file.to_string(),
        line,
        group: None,
        rule: None,
        message: message.lines().next().unwrap_or("").to_string(),
    }
}

/// Parses and validates the text of a rule file named `file`.
pub fn parse_file(
    file: &str,
    text: &str,
    default_language: Language,
) -> Result<Vec<RuleGroup>, Vec<RuleError>> {
    let text = if text.trim().is_empty() { "{}" } else { text };
    let def: FileDef = serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(file, e)])?;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut names = HashSet::new();
    for g in def.groups {
        let line = g.referenced.line();
        let g = g.value;
        if !g.name.is_empty() && !names.insert(g.name.clone()) {
            errors.push(RuleError {
                file: file.to_string(),
                line,
                group: Some(g.name.clone()),
                rule: None,
                message: format!("groupname: {:?} is repeated in the same file", g.name),
            });
            continue;
        }
        match validate_group(file, line, g, default_language) {
            Ok(group) => groups.push(group),
            Err(mut errs) => errors.append(&mut errs),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// Parses one group (the body of a Loki ruler API `POST`).
pub fn parse_group(
    file: &str,
    text: &str,
    default_language: Language,
) -> Result<RuleGroup, Vec<RuleError>> {
    let def: Spanned<GroupDef> =
        serde_saphyr::from_str(text).map_err(|e| vec![yaml_error(file, e)])?;
    let line = def.referenced.line();
    validate_group(file, line, def.value, default_language)
}

fn parse_duration_field(value: &Option<String>, field: &str) -> Result<Duration, String> {
    match value.as_deref() {
        None | Some("") => Ok(Duration::ZERO),
        Some(s) => parse_prometheus_duration(s).map_err(|e| format!("invalid {field} {s:?}: {e}")),
    }
}

/// Validates a group as Prometheus' `rulefmt` does.
pub fn validate_group(
    file: &str,
    line: u64,
    g: GroupDef,
    default_language: Language,
) -> Result<RuleGroup, Vec<RuleError>> {
    let mut errors = Vec::new();
    let err = |line: u64, rule: Option<(usize, String)>, message: String| RuleError {
        file: file.to_string(),
        line,
        group: Some(g.name.clone()),
        rule,
        message,
    };
    if g.name.is_empty() {
        errors.push(err(line, None, "groupname must not be empty".into()));
    }
    let language = match g.kind.as_deref() {
        None | Some("") => default_language,
        Some("promql" | "prometheus") => Language::Promql,
        Some("logql" | "loki") => Language::Logql,
        Some(other) => {
            errors.push(err(
                line,
                None,
                format!("invalid type {other:?}: use promql or logql"),
            ));
            default_language
        }
    };
    let interval = match g.interval.as_deref() {
        None | Some("") => None,
        Some(s) => match parse_prometheus_duration(s) {
            Ok(d) if d.is_zero() => {
                errors.push(err(line, None, "interval must be greater than 0".into()));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(err(line, None, format!("invalid interval {s:?}: {e}")));
                None
            }
        },
    };
    let query_offset = parse_duration_field(&g.query_offset, "query_offset").unwrap_or_else(|e| {
        errors.push(err(line, None, e));
        Duration::ZERO
    });
    for name in g.labels.keys() {
        if !lucia_common::labels::is_valid_label_name(name) {
            errors.push(err(line, None, format!("invalid label name: {name}")));
        }
    }
    let mut rules = Vec::new();
    for (i, r) in g.rules.iter().enumerate() {
        let rline = r.referenced.line();
        let r = &r.value;
        let name = r
            .record
            .clone()
            .or_else(|| r.alert.clone())
            .unwrap_or_default();
        let at = Some((i + 1, name.clone()));
        let mut rule_errors = Vec::new();
        let kind = match (&r.record, &r.alert) {
            (Some(_), Some(_)) => {
                rule_errors.push("only one of 'record' and 'alert' must be set".to_string());
                RuleKind::Recording
            }
            (None, None) => {
                rule_errors.push("one of 'record' or 'alert' must be set".to_string());
                RuleKind::Recording
            }
            (Some(record), None) => {
                if record.is_empty() {
                    rule_errors.push("one of 'record' or 'alert' must be set".to_string());
                } else if !lucia_common::labels::is_valid_metric_name(record) {
                    rule_errors.push(format!("invalid recording rule name: {record}"));
                }
                if !r.annotations.is_empty() {
                    rule_errors.push("invalid field 'annotations' in recording rule".into());
                }
                if r.for_.is_some() {
                    rule_errors.push("invalid field 'for' in recording rule".into());
                }
                if r.keep_firing_for.is_some() {
                    rule_errors.push("invalid field 'keep_firing_for' in recording rule".into());
                }
                RuleKind::Recording
            }
            (None, Some(alert)) => {
                if alert.is_empty() {
                    rule_errors.push("one of 'record' or 'alert' must be set".to_string());
                }
                RuleKind::Alerting
            }
        };
        let expr = r.expr.clone().unwrap_or_default();
        if expr.trim().is_empty() {
            rule_errors.push("field 'expr' must be set in rule".into());
        } else if let Err(e) = check_expr(language, &expr) {
            rule_errors.push(format!("could not parse expression: {e}"));
        }
        for name in r.labels.keys() {
            if !lucia_common::labels::is_valid_label_name(name) {
                rule_errors.push(format!("invalid label name: {name}"));
            }
        }
        for name in r.annotations.keys() {
            if !lucia_common::labels::is_valid_label_name(name) {
                rule_errors.push(format!("invalid annotation name: {name}"));
            }
        }
        if kind == RuleKind::Alerting {
            for (what, map) in [("label", &r.labels), ("annotation", &r.annotations)] {
                for (k, v) in map {
                    if let Err(e) = template::check(v) {
                        rule_errors.push(format!("{what} {k:?}: {e}"));
                    }
                }
            }
        }
        let for_ = parse_duration_field(&r.for_, "for").unwrap_or_else(|e| {
            rule_errors.push(e);
            Duration::ZERO
        });
        let keep_firing_for = parse_duration_field(&r.keep_firing_for, "keep_firing_for")
            .unwrap_or_else(|e| {
                rule_errors.push(e);
                Duration::ZERO
            });
        if rule_errors.is_empty() {
            rules.push(Rule {
                kind,
                name,
                expr,
                for_,
                keep_firing_for,
                labels: r.labels.clone(),
                annotations: r.annotations.clone(),
                line: rline,
            });
        } else {
            for message in rule_errors {
                errors.push(err(rline, at.clone(), message));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(RuleGroup {
        file: file.to_string(),
        name: g.name.clone(),
        interval,
        query_offset,
        limit: g.limit.unwrap_or(0),
        labels: g.labels.clone(),
        language,
        rules,
        source: g,
    })
}

/// Checks that `expr` parses in `language`.
pub fn check_expr(language: Language, expr: &str) -> Result<(), String> {
    match language {
        Language::Promql => promql_parser::parser::parse(expr).map(|_| ()),
        Language::Logql => lucia_logql::parser::parse(expr)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// Writes a group as YAML (every string double-quoted), as the Loki ruler
/// API serves it back.
pub fn group_to_yaml(g: &GroupDef, indent: &str, out: &mut String) {
    use std::fmt::Write as _;
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let _ = writeln!(out, "{indent}- name: {}", q(&g.name));
    let inner = format!("{indent}  ");
    let opt = |out: &mut String, key: &str, v: &Option<String>| {
        if let Some(v) = v {
            let _ = writeln!(out, "{inner}{key}: {}", q(v));
        }
    };
    opt(out, "interval", &g.interval);
    opt(out, "query_offset", &g.query_offset);
    opt(out, "type", &g.kind);
    if let Some(limit) = g.limit {
        let _ = writeln!(out, "{inner}limit: {limit}");
    }
    let map = |out: &mut String, key: &str, m: &BTreeMap<String, String>, ind: &str| {
        if !m.is_empty() {
            let _ = writeln!(out, "{ind}{key}:");
            for (k, v) in m {
                let _ = writeln!(out, "{ind}  {}: {}", q(k), q(v));
            }
        }
    };
    map(out, "labels", &g.labels, &inner);
    let _ = writeln!(out, "{inner}rules:");
    for r in &g.rules {
        let r = &r.value;
        let mut first = true;
        let mut field = |out: &mut String, key: &str, v: &Option<String>| {
            if let Some(v) = v {
                let lead = if first { "- " } else { "  " };
                first = false;
                let _ = writeln!(out, "{inner}  {lead}{key}: {}", q(v));
            }
        };
        field(out, "record", &r.record);
        field(out, "alert", &r.alert);
        field(out, "expr", &r.expr);
        field(out, "for", &r.for_);
        field(out, "keep_firing_for", &r.keep_firing_for);
        if first {
            let _ = writeln!(out, "{inner}  - {{}}");
            continue;
        }
        let ind = format!("{inner}    ");
        map(out, "labels", &r.labels, &ind);
        map(out, "annotations", &r.annotations, &ind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"groups:
  - name: example
    interval: 30s
    labels:
      team: infra
    rules:
      - record: job:up:sum
        expr: sum by (job) (up)
      - alert: InstanceDown
        expr: up == 0
        for: 5m
        keep_firing_for: 1m
        labels:
          severity: page
        annotations:
          summary: "{{ $labels.instance }} down ({{ $value }})"
  - name: logs
    type: logql
    rules:
      - alert: Errors
        expr: sum(rate({app="x"} |= "error" [5m])) > 1
"#;

    #[test]
    fn parses_groups_and_rules() {
        let groups = parse_file("r.yml", GOOD, Language::Promql).unwrap();
        assert_eq!(groups.len(), 2);
        let g = &groups[0];
        assert_eq!(g.interval, Some(Duration::from_secs(30)));
        assert_eq!(g.labels["team"], "infra");
        assert_eq!(g.rules[0].kind, RuleKind::Recording);
        assert_eq!(g.rules[1].for_, Duration::from_secs(300));
        assert_eq!(g.rules[1].keep_firing_for, Duration::from_secs(60));
        assert_eq!(g.rules[1].line, 9);
        assert_eq!(groups[1].language, Language::Logql);
    }

    #[test]
    fn errors_name_file_group_rule_and_line() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: ok\n        expr: up\n      - alert: Bad\n        expr: up ==\n";
        let errs = parse_file("bad.yml", text, Language::Promql).unwrap_err();
        let msg = errs[0].to_string();
        assert!(
            msg.starts_with("bad.yml:6: group \"g\", rule 2, \"Bad\": could not parse expression"),
            "{msg}"
        );
        let errs = parse_file(
            "x.yml",
            "groups:\n  - name: g\n    rulez: []\n",
            Language::Promql,
        )
        .unwrap_err();
        assert!(errs[0].to_string().contains("rulez"), "{}", errs[0]);
        assert!(errs[0].line == 3, "{:?}", errs[0]);
        let errs = parse_file(
            "x.yml",
            "groups:\n  - name: g\n    rules:\n      - record: a\n        alert: b\n        expr: up\n  - name: g\n    rules: []\n",
            Language::Promql,
        )
        .unwrap_err();
        let all: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(all[0].contains("only one of"), "{all:?}");
        assert!(all[1].contains("repeated"), "{all:?}");
    }

    #[test]
    fn recording_rules_refuse_alert_fields() {
        let text = "groups:\n  - name: g\n    rules:\n      - record: 'bad name'\n        expr: up\n        for: 1m\n";
        let errs = parse_file("x.yml", text, Language::Promql).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn numbers_are_strings_and_templates_are_checked() {
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: 1\n        labels:\n          sev: 2\n        annotations:\n          x: '{{ .Nope'\n";
        let errs = parse_file("x.yml", text, Language::Promql).unwrap_err();
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("annotation \"x\""), "{errs:?}");
    }

    #[test]
    fn yaml_round_trip() {
        let groups = parse_file("r.yml", GOOD, Language::Promql).unwrap();
        let mut out = String::from("groups:\n");
        for g in &groups {
            group_to_yaml(&g.source, "  ", &mut out);
        }
        let again = parse_file("r.yml", &out, Language::Promql).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(
            again[0].rules[1].annotations,
            groups[0].rules[1].annotations
        );
        assert_eq!(again[1].language, Language::Logql);
    }
}
