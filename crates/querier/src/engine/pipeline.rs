//! The engine's view of a query pipeline: per stream, turn an entry into a
//! processed line (or a sample) with its final label set, or drop it.
//!
//! This is a small built-in runtime for the stages that need no parser
//! (line filters, label filters, drop/keep, unwrap); other stages report
//! that they are not supported yet. The full runtime lives in
//! `lucia_logql::pipeline` and replaces this one when it is merged.

use std::collections::HashMap;
use std::sync::Arc;

use lucia_common::labels::Labels;
use lucia_common::matchers::{MatchOp, Matcher};
use lucia_logql::ast;
use regex::Regex;

use crate::QueryError;

pub(crate) const ERROR_LABEL: &str = "__error__";
const ERROR_DETAILS_LABEL: &str = "__error_details__";

/// The final labels of a processed line, by category.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LineLabels {
    pub labels: Labels,
    pub structured_metadata: Labels,
    pub parsed: Labels,
}

enum LineMatcher {
    Contains(String),
    Regex(Regex),
}

impl LineMatcher {
    fn is_match(&self, line: &str) -> bool {
        match self {
            Self::Contains(s) => line.contains(s.as_str()),
            Self::Regex(re) => re.is_match(line),
        }
    }
}

enum CompiledStage {
    Line { negate: bool, any: Vec<LineMatcher> },
    Filter(ast::LabelFilter),
    Drop(Vec<ast::LabelSelector>),
    Keep(Vec<ast::LabelSelector>),
}

/// A compiled pipeline, shared by every stream of a query.
pub(crate) struct Pipeline {
    stages: Arc<Vec<CompiledStage>>,
    unwrap: Option<ast::Unwrap>,
}

fn unsupported(what: &str) -> QueryError {
    QueryError::BadRequest(format!(
        "{what} is not supported by this querier yet: remove it from the query"
    ))
}

impl Pipeline {
    pub(crate) fn compile(
        log: &ast::LogExpr,
        unwrap: Option<&ast::Unwrap>,
    ) -> Result<Self, QueryError> {
        let mut stages = Vec::new();
        for stage in &log.stages {
            stages.push(match stage {
                ast::Stage::LineFilter(filter) => {
                    let (negate, regex) = match filter.op {
                        ast::LineFilterOp::Contains => (false, false),
                        ast::LineFilterOp::NotContains => (true, false),
                        ast::LineFilterOp::Regex => (false, true),
                        ast::LineFilterOp::NotRegex => (true, true),
                        _ => return Err(unsupported("the pattern line filter")),
                    };
                    let mut any = Vec::new();
                    for value in &filter.values {
                        let ast::LineFilterValue::Text(text) = value else {
                            return Err(unsupported("the ip() line filter"));
                        };
                        any.push(if regex {
                            LineMatcher::Regex(Regex::new(text).map_err(|e| {
                                QueryError::BadRequest(format!("error parsing regexp: {e}"))
                            })?)
                        } else {
                            LineMatcher::Contains(text.clone())
                        });
                    }
                    CompiledStage::Line { negate, any }
                }
                ast::Stage::LabelFilter(filter) => CompiledStage::Filter(filter.clone()),
                ast::Stage::Drop(sel) => CompiledStage::Drop(sel.clone()),
                ast::Stage::Keep(sel) => CompiledStage::Keep(sel.clone()),
                ast::Stage::Parser(_) => return Err(unsupported("a parser stage")),
                ast::Stage::LineFormat(_) => return Err(unsupported("line_format")),
                ast::Stage::LabelFormat(_) => return Err(unsupported("label_format")),
                ast::Stage::Decolorize => return Err(unsupported("decolorize")),
            });
        }
        if let Some(unwrap) = unwrap
            && unwrap.conversion == Some(ast::UnwrapConversion::Bytes)
        {
            return Err(unsupported("unwrap bytes()"));
        }
        Ok(Self {
            stages: Arc::new(stages),
            unwrap: unwrap.cloned(),
        })
    }

    pub(crate) fn for_stream(&self, labels: &Labels) -> StreamPipeline {
        StreamPipeline {
            stages: self.stages.clone(),
            unwrap: self.unwrap.clone(),
            base: labels.clone(),
            cache: HashMap::new(),
        }
    }
}

/// Per-line label state: (name, value, category) with category 0 stream,
/// 1 structured metadata, 2 parsed.
struct State {
    labels: Vec<(String, String, u8)>,
}

impl State {
    fn get(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, v, _)| v.as_str())
    }
    fn set(&mut self, name: &str, value: &str, category: u8) {
        match self.labels.iter_mut().find(|(n, _, _)| n == name) {
            Some(slot) => slot.1 = value.to_string(),
            None => self
                .labels
                .push((name.to_string(), value.to_string(), category)),
        }
    }
    fn has_err(&self) -> bool {
        self.get(ERROR_LABEL).is_some_and(|v| !v.is_empty())
    }
    fn set_err(&mut self, err: &str, details: &str) {
        if !self.has_err() {
            self.set(ERROR_LABEL, err, 2);
            self.set(ERROR_DETAILS_LABEL, details, 2);
        }
    }
}

pub(crate) struct StreamPipeline {
    stages: Arc<Vec<CompiledStage>>,
    unwrap: Option<ast::Unwrap>,
    base: Labels,
    cache: HashMap<Vec<(String, String, u8)>, Arc<LineLabels>>,
}

fn selector_matches(sel: &ast::LabelSelector, state: &State) -> Option<String> {
    match sel {
        ast::LabelSelector::Name(name) => Some(name.clone()),
        ast::LabelSelector::Matcher(m) => {
            let value = state.get(&m.name)?;
            m.matches_value(value).then(|| m.name.clone())
        }
    }
}

fn compare(op: ast::CmpOp, a: f64, b: f64) -> bool {
    match op {
        ast::CmpOp::Eq => a == b,
        ast::CmpOp::Ne => a != b,
        ast::CmpOp::Gt => a > b,
        ast::CmpOp::Ge => a >= b,
        ast::CmpOp::Lt => a < b,
        ast::CmpOp::Le => a <= b,
    }
}

fn eval_filter(filter: &ast::LabelFilter, state: &mut State) -> bool {
    match filter {
        ast::LabelFilter::And(a, b) => {
            let left = eval_filter(a, state);
            let right = eval_filter(b, state);
            left && right
        }
        ast::LabelFilter::Or(a, b) => eval_filter(a, state) || eval_filter(b, state),
        ast::LabelFilter::String(m) => m.matches_value(state.get(&m.name).unwrap_or("")),
        ast::LabelFilter::Number { name, op, value } => numeric(
            state,
            name,
            |s| s.trim().parse::<f64>().ok(),
            |v| compare(*op, v, *value),
        ),
        ast::LabelFilter::Duration { name, op, value } => numeric(
            state,
            name,
            |s| {
                lucia_common::duration::parse_go_duration(s)
                    .ok()
                    .map(|d| d.as_secs_f64())
            },
            |v| compare(*op, v, value.as_secs_f64()),
        ),
        // Bytes and ip filters need the full pipeline runtime.
        ast::LabelFilter::Bytes { .. } | ast::LabelFilter::Ip { .. } => {
            state.set_err(
                "LabelFilterErr",
                "bytes and ip label filters are not supported yet",
            );
            true
        }
    }
}

fn numeric(
    state: &mut State,
    name: &str,
    parse: impl Fn(&str) -> Option<f64>,
    cmp: impl Fn(f64) -> bool,
) -> bool {
    if state.has_err() {
        return true;
    }
    let Some(raw) = state.get(name) else {
        return false;
    };
    match parse(raw) {
        Some(v) => cmp(v),
        None => {
            let details = format!("cannot convert {raw:?} for label {name}");
            state.set_err("LabelFilterErr", &details);
            true
        }
    }
}

impl StreamPipeline {
    fn initial_state(&self, metadata: &[(String, String)]) -> State {
        let mut labels: Vec<(String, String, u8)> = self
            .base
            .iter()
            .map(|l| (l.name.clone(), l.value.clone(), 0))
            .collect();
        for (name, value) in metadata {
            let target = if self.base.get(name).is_some() {
                format!("{name}_extracted")
            } else {
                name.clone()
            };
            if !labels.iter().any(|(n, _, _)| *n == target) {
                labels.push((target, value.clone(), 1));
            }
        }
        State { labels }
    }

    fn run_stages(&self, line: &str, state: &mut State) -> bool {
        for stage in self.stages.iter() {
            match stage {
                CompiledStage::Line { negate, any } => {
                    let hit = any.iter().any(|m| m.is_match(line));
                    if hit == *negate {
                        return false;
                    }
                }
                CompiledStage::Filter(filter) => {
                    if !eval_filter(filter, state) {
                        return false;
                    }
                }
                CompiledStage::Drop(selectors) => {
                    let names: Vec<String> = selectors
                        .iter()
                        .filter_map(|s| selector_matches(s, state))
                        .collect();
                    state.labels.retain(|(n, _, _)| !names.contains(n));
                }
                CompiledStage::Keep(selectors) => {
                    let names: Vec<String> = selectors
                        .iter()
                        .filter_map(|s| selector_matches(s, state))
                        .collect();
                    state.labels.retain(|(n, _, _)| names.contains(n));
                }
            }
        }
        true
    }

    fn finish(&mut self, mut state: State) -> Arc<LineLabels> {
        if !state.has_err() {
            state.labels.retain(|(n, _, _)| n != ERROR_DETAILS_LABEL);
        }
        state.labels.sort();
        if let Some(hit) = self.cache.get(&state.labels) {
            return hit.clone();
        }
        let pick = |c: Option<u8>| {
            Labels::from_pairs(
                state
                    .labels
                    .iter()
                    .filter(|(_, _, cat)| c.is_none_or(|c| *cat == c))
                    .map(|(n, v, _)| (n.clone(), v.clone())),
            )
        };
        let result = Arc::new(LineLabels {
            labels: pick(None),
            structured_metadata: pick(Some(1)),
            parsed: pick(Some(2)),
        });
        if self.cache.len() < 4096 {
            self.cache.insert(state.labels, result.clone());
        }
        result
    }

    /// Runs a log line through the stages: `None` when a stage drops it.
    pub(crate) fn process(
        &mut self,
        line: &str,
        metadata: &[(String, String)],
    ) -> Option<(String, Arc<LineLabels>)> {
        let mut state = self.initial_state(metadata);
        if !self.run_stages(line, &mut state) {
            return None;
        }
        Some((line.to_string(), self.finish(state)))
    }

    /// Runs a line through the stages and the unwrap: the processed line's
    /// byte length and the unwrapped value (1 without unwrap).
    pub(crate) fn extract(
        &mut self,
        line: &str,
        metadata: &[(String, String)],
    ) -> Option<(usize, f64, Arc<LineLabels>)> {
        let mut state = self.initial_state(metadata);
        if !self.run_stages(line, &mut state) {
            return None;
        }
        let mut value = 1.0;
        if let Some(unwrap) = &self.unwrap {
            let raw = state.get(&unwrap.label)?.to_string();
            if raw.is_empty() {
                return None;
            }
            let parsed = match unwrap.conversion {
                None => raw.trim().parse::<f64>().ok(),
                Some(_) => lucia_common::duration::parse_go_duration(raw.trim())
                    .ok()
                    .map(|d| d.as_secs_f64()),
            };
            value = match parsed {
                Some(v) => v,
                None => {
                    state.set_err(
                        "SampleExtractionErr",
                        &format!("cannot convert {raw:?} to a number"),
                    );
                    0.0
                }
            };
            let label = unwrap.label.clone();
            state.labels.retain(|(n, _, _)| *n != label);
            for filter in &unwrap.post_filters {
                if !eval_filter(filter, &mut state) {
                    return None;
                }
            }
        }
        Some((line.len(), value, self.finish(state)))
    }
}

/// The labels `absent_over_time` reports: the selector's equality matchers
/// (a name matched twice is left out).
pub(crate) fn absent_labels(matchers: &[Matcher]) -> Labels {
    let mut labels = Labels::new();
    let mut seen_twice = Vec::new();
    for m in matchers {
        if labels.get(&m.name).is_some() || seen_twice.contains(&m.name) {
            labels.remove(&m.name);
            seen_twice.push(m.name.clone());
            continue;
        }
        if m.op == MatchOp::Equal {
            labels.insert(m.name.clone(), m.value.clone());
        } else {
            seen_twice.push(m.name.clone());
        }
    }
    labels
}
