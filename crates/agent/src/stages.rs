//! Promtail's `pipeline_stages`.
//!
//! Each tailed file runs its own [`Pipeline`], so stateful stages
//! (`multiline`, `cri` partial lines) keep their state per stream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use lucia_common::duration::ConfigDuration;
use lucia_common::matchers::Matcher;
use lucia_logql::template::{Template, TemplateData};
use regex::Regex;
use serde::Deserialize;

use crate::stage_metrics::{CustomMetrics, MetricStage};
use lucia_common::relabel::LabelMap;

/// One log entry as it flows through a pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub labels: LabelMap,
    /// Nanoseconds since the epoch.
    pub timestamp: i64,
    pub line: String,
    pub structured_metadata: LabelMap,
    /// Values extracted by parsing stages.
    pub extracted: BTreeMap<String, String>,
    /// Set by the `tenant` stage; overrides the client's `tenant_id`.
    pub tenant: Option<String>,
    /// Where the last line of this entry ends in its file: the position to
    /// record once the entry is acknowledged.
    pub offset: u64,
    /// [`crate::positions::fingerprint`] of that last line, recorded with
    /// the position (files only).
    pub fingerprint: Option<u64>,
}

impl Entry {
    pub fn new(labels: LabelMap, timestamp: i64, line: String) -> Self {
        let extracted = labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        Self {
            labels,
            timestamp,
            line,
            structured_metadata: LabelMap::new(),
            extracted,
            tenant: None,
            offset: 0,
            fingerprint: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StageConfig {
    Regex(RegexConfig),
    Json(JsonConfig),
    Logfmt(LogfmtConfig),
    Replace(ReplaceConfig),
    Template(TemplateConfig),
    Labels(BTreeMap<String, Option<String>>),
    StructuredMetadata(BTreeMap<String, Option<String>>),
    StaticLabels(BTreeMap<String, String>),
    Labeldrop(Vec<String>),
    Labelallow(Vec<String>),
    Timestamp(TimestampConfig),
    Output(OutputConfig),
    Tenant(TenantConfig),
    Match(MatchConfig),
    Drop(DropConfig),
    Decolorize(Option<EmptyConfig>),
    Multiline(MultilineConfig),
    Docker(Option<EmptyConfig>),
    Cri(Option<CriConfig>),
    Pack(PackConfig),
    Metrics(BTreeMap<String, crate::stage_metrics::MetricConfig>),
    Sampling(SamplingConfig),
    Limit(LimitConfig),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PackConfig {
    pub labels: Vec<String>,
    pub ingest_timestamp: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    pub rate: f64,
    #[serde(default)]
    pub drop_counter_reason: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    pub rate: f64,
    pub burst: u64,
    #[serde(default)]
    pub drop: bool,
    #[serde(default)]
    pub by_label_name: Option<String>,
    #[serde(default)]
    pub max_distinct_labels: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmptyConfig {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegexConfig {
    pub expression: String,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonConfig {
    #[serde(default)]
    pub expressions: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub drop_malformed: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogfmtConfig {
    #[serde(default)]
    pub mapping: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceConfig {
    pub expression: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub replace: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateConfig {
    pub source: String,
    pub template: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimestampConfig {
    pub source: String,
    pub format: String,
    #[serde(default)]
    pub fallback_formats: Vec<String>,
    #[serde(default)]
    pub location: Option<Location>,
    #[serde(default)]
    pub action_on_failure: Option<String>,
}

/// The `location` of a `timestamp` stage: an IANA zone, loaded while the
/// file is parsed so that an unknown zone is reported with its line.
#[derive(Debug, Clone)]
pub struct Location(pub std::sync::Arc<lucia_common::timezone::Zone>);

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        lucia_common::timezone::Zone::load(&name)
            .map(|zone| Location(std::sync::Arc::new(zone)))
            .map_err(|err| serde::de::Error::custom(format!("location: {err}")))
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub source: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantConfig {
    pub source: Option<String>,
    pub value: Option<String>,
    pub label: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    pub selector: String,
    #[serde(default)]
    pub pipeline_name: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub drop_counter_reason: Option<String>,
    #[serde(default)]
    pub stages: Vec<StageConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DropConfig {
    pub source: Option<OneOrMany>,
    pub separator: Option<String>,
    pub expression: Option<String>,
    pub value: Option<String>,
    pub older_than: Option<ConfigDuration>,
    pub longer_than: Option<ByteSize>,
    pub drop_counter_reason: Option<String>,
}

/// A size such as `8KB` or `1024` (bytes).
#[derive(Debug, Clone, Copy)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Num(n) => Ok(ByteSize(n)),
            Raw::Text(t) => lucia_logql::pipeline::parse_bytes(&t)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineConfig {
    pub firstline: String,
    #[serde(default)]
    pub max_wait_time: Option<ConfigDuration>,
    #[serde(default)]
    pub max_lines: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CriConfig {
    pub max_partial_lines: Option<usize>,
    pub max_partial_line_size: Option<ByteSize>,
    pub max_partial_line_size_truncate: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("{stage} stage: invalid regular expression: {source}")]
    Regex {
        stage: &'static str,
        source: regex::Error,
    },
    #[error("{stage} stage: {message}")]
    Invalid {
        stage: &'static str,
        message: String,
    },
}

fn compile(stage: &'static str, expr: &str) -> Result<Regex, StageError> {
    Regex::new(expr).map_err(|source| StageError::Regex { stage, source })
}

fn invalid(stage: &'static str, message: impl Into<String>) -> StageError {
    StageError::Invalid {
        stage,
        message: message.into(),
    }
}

enum Stage {
    Regex {
        re: Regex,
        source: Option<String>,
    },
    Json {
        expressions: Vec<(String, Vec<PathPart>)>,
        source: Option<String>,
        drop_malformed: bool,
    },
    Logfmt {
        mapping: Vec<(String, String)>,
        source: Option<String>,
    },
    Replace {
        re: Regex,
        source: Option<String>,
        replace: Template,
    },
    Template {
        source: String,
        template: Template,
    },
    Labels(Vec<(String, String)>),
    StructuredMetadata(Vec<(String, String)>),
    StaticLabels(Vec<(String, String)>),
    LabelDrop(Vec<String>),
    LabelAllow(Vec<String>),
    Timestamp {
        source: String,
        formats: Vec<String>,
        skip_on_failure: bool,
        /// Applied to formats without a zone; `None` is UTC.
        location: Option<std::sync::Arc<lucia_common::timezone::Zone>>,
    },
    Output(String),
    Tenant(TenantConfig),
    Match {
        matchers: Vec<Matcher>,
        filters: Vec<LineFilter>,
        drop: bool,
        stages: Pipeline,
    },
    Drop(DropStage),
    Decolorize(Regex),
    Multiline(Multiline),
    Docker,
    Cri {
        partial: Option<String>,
        max_partial_lines: usize,
        partial_lines: usize,
    },
    Pack {
        labels: Vec<String>,
        ingest_timestamp: bool,
    },
    Sampling(f64),
    Limit(Limiter),
    Metrics(crate::stage_metrics::MetricStage),
}

/// Token buckets of the `limit` stage: one, or one per value of
/// `by_label_name`.
struct Limiter {
    rate: f64,
    burst: f64,
    drop: bool,
    by_label: Option<String>,
    max_distinct: usize,
    buckets: std::collections::HashMap<String, (f64, Instant)>,
    /// Without `drop`, the time until which reading must pause.
    throttle_until: Option<Instant>,
}

impl Limiter {
    fn admit(&mut self, entry: &Entry) -> bool {
        let key = match &self.by_label {
            None => String::new(),
            Some(name) => match entry.labels.get(name) {
                Some(v) => v.clone(),
                // Entries without the label are not limited.
                None => return true,
            },
        };
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.max_distinct {
            // Too many distinct values: start over rather than grow.
            self.buckets.clear();
        }
        let now = Instant::now();
        let (tokens, last) = self.buckets.entry(key).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            return true;
        }
        if self.drop {
            return false;
        }
        // Borrow the token and make the reader wait until it is paid back.
        *tokens -= 1.0;
        let wait = Duration::from_secs_f64((-*tokens / self.rate.max(1e-9)).min(3600.0));
        let until = now + wait;
        self.throttle_until = Some(self.throttle_until.map_or(until, |t| t.max(until)));
        true
    }
}

struct DropStage {
    sources: Vec<String>,
    separator: String,
    expression: Option<Regex>,
    value: Option<String>,
    older_than: Option<Duration>,
    longer_than: Option<u64>,
}

struct Multiline {
    firstline: Regex,
    max_wait: Duration,
    max_lines: usize,
    pending: Option<(Entry, usize, Instant)>,
}

enum LineFilter {
    Contains(String),
    NotContains(String),
    Matches(Regex),
    NotMatches(Regex),
}

/// A compiled list of stages.
pub struct Pipeline {
    stages: Vec<Stage>,
    inspect: bool,
}

impl Pipeline {
    /// Compiles `configs`; `metrics` stages register their series in
    /// `custom` (shared by every file's pipeline).
    pub fn new(configs: &[StageConfig], custom: &CustomMetrics) -> Result<Self, StageError> {
        Self::build(configs, true, custom)
    }

    fn build(
        configs: &[StageConfig],
        top: bool,
        custom: &CustomMetrics,
    ) -> Result<Self, StageError> {
        let stages = configs
            .iter()
            .map(|c| build_stage(c, top, custom))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            stages,
            inspect: false,
        })
    }

    /// Runs `entry` through every stage, appending what comes out to `out`.
    pub fn process(&mut self, entry: Entry, out: &mut Vec<Entry>) {
        run_from(&mut self.stages, 0, entry, out, self.inspect);
    }

    /// `--inspect`: print what each stage changes to stderr.
    pub fn set_inspect(&mut self, inspect: bool) {
        self.inspect = inspect;
        for stage in &mut self.stages {
            if let Stage::Match { stages, .. } = stage {
                stages.set_inspect(inspect);
            }
        }
    }

    /// The time until which a `limit` stage (without `drop`) asks reading
    /// to pause; cleared by the call.
    pub fn take_throttle(&mut self) -> Option<Instant> {
        let mut until: Option<Instant> = None;
        for stage in &mut self.stages {
            let t = match stage {
                Stage::Limit(l) => l.throttle_until.take(),
                Stage::Match { stages, .. } => stages.take_throttle(),
                _ => None,
            };
            if let Some(t) = t {
                until = Some(until.map_or(t, |u| u.max(t)));
            }
        }
        until
    }

    /// Emits entries that a `multiline` stage has held for longer than its
    /// `max_wait_time` (all of them with `force`).
    pub fn flush(&mut self, now: Instant, force: bool, out: &mut Vec<Entry>) {
        for i in 0..self.stages.len() {
            let expired = match &mut self.stages[i] {
                Stage::Multiline(m) => match &m.pending {
                    Some((_, _, since)) if force || now.duration_since(*since) >= m.max_wait => {
                        m.pending.take().map(|(e, _, _)| e)
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(entry) = expired {
                run_from(&mut self.stages, i + 1, entry, out, self.inspect);
            }
        }
    }
}

fn pairs(map: &BTreeMap<String, Option<String>>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let source = v
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| k.clone());
            (k.clone(), source)
        })
        .collect()
}

fn build_stage(
    config: &StageConfig,
    top: bool,
    custom: &CustomMetrics,
) -> Result<Stage, StageError> {
    Ok(match config {
        StageConfig::Regex(c) => Stage::Regex {
            re: compile("regex", &c.expression)?,
            source: c.source.clone(),
        },
        StageConfig::Json(c) => Stage::Json {
            expressions: pairs(&c.expressions)
                .into_iter()
                .map(|(name, expr)| {
                    parse_json_path(&expr)
                        .map(|p| (name, p))
                        .ok_or_else(|| invalid("json", format!("invalid expression {expr:?}")))
                })
                .collect::<Result<_, _>>()?,
            source: c.source.clone(),
            drop_malformed: c.drop_malformed,
        },
        StageConfig::Logfmt(c) => Stage::Logfmt {
            mapping: pairs(&c.mapping),
            source: c.source.clone(),
        },
        StageConfig::Replace(c) => Stage::Replace {
            re: compile("replace", &c.expression)?,
            source: c.source.clone(),
            replace: Template::parse(&c.replace).map_err(|e| invalid("replace", e.to_string()))?,
        },
        StageConfig::Template(c) => Stage::Template {
            source: c.source.clone(),
            template: Template::parse(&c.template)
                .map_err(|e| invalid("template", e.to_string()))?,
        },
        StageConfig::Labels(m) => Stage::Labels(checked_names("labels", pairs(m))?),
        StageConfig::StructuredMetadata(m) => {
            Stage::StructuredMetadata(checked_names("structured_metadata", pairs(m))?)
        }
        StageConfig::StaticLabels(m) => Stage::StaticLabels(checked_names(
            "static_labels",
            m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        )?),
        StageConfig::Labeldrop(v) => Stage::LabelDrop(v.clone()),
        StageConfig::Labelallow(v) => Stage::LabelAllow(v.clone()),
        StageConfig::Timestamp(c) => {
            let skip_on_failure = match c.action_on_failure.as_deref() {
                None | Some("fudge") => false,
                Some("skip") => true,
                Some(other) => {
                    return Err(invalid(
                        "timestamp",
                        format!("action_on_failure must be fudge or skip, not {other:?}"),
                    ));
                }
            };
            let mut formats = vec![c.format.clone()];
            formats.extend(c.fallback_formats.iter().cloned());
            Stage::Timestamp {
                source: c.source.clone(),
                formats,
                skip_on_failure,
                location: c
                    .location
                    .as_ref()
                    .map(|l| l.0.clone())
                    .filter(|zone| !zone.is_utc()),
            }
        }
        StageConfig::Output(c) => Stage::Output(c.source.clone()),
        StageConfig::Tenant(c) => {
            let set = [&c.source, &c.value, &c.label]
                .iter()
                .filter(|v| v.is_some())
                .count();
            if set != 1 {
                return Err(invalid(
                    "tenant",
                    "exactly one of source, value and label must be set",
                ));
            }
            Stage::Tenant(c.clone())
        }
        StageConfig::Match(c) => {
            let (matchers, filters) = parse_match_selector(&c.selector)?;
            let drop = match c.action.as_deref() {
                None | Some("keep") => false,
                Some("drop") => true,
                Some(other) => {
                    return Err(invalid(
                        "match",
                        format!("action must be keep or drop, not {other:?}"),
                    ));
                }
            };
            if !drop && c.stages.is_empty() {
                return Err(invalid("match", "stages are required with action keep"));
            }
            Stage::Match {
                matchers,
                filters,
                drop,
                stages: Pipeline::build(&c.stages, false, custom)?,
            }
        }
        StageConfig::Drop(c) => {
            let sources = match &c.source {
                None => Vec::new(),
                Some(OneOrMany::One(s)) => vec![s.clone()],
                Some(OneOrMany::Many(v)) => v.clone(),
            };
            if c.expression.is_some() && c.value.is_some() {
                return Err(invalid("drop", "expression and value cannot both be set"));
            }
            if sources.is_empty()
                && c.expression.is_none()
                && c.value.is_none()
                && c.older_than.is_none()
                && c.longer_than.is_none()
            {
                return Err(invalid("drop", "at least one condition must be set"));
            }
            Stage::Drop(DropStage {
                sources,
                separator: c.separator.clone().unwrap_or_else(|| ";".to_string()),
                expression: c
                    .expression
                    .as_deref()
                    .map(|e| compile("drop", e))
                    .transpose()?,
                value: c.value.clone(),
                older_than: c.older_than.map(Duration::from),
                longer_than: c.longer_than.map(|b| b.0),
            })
        }
        StageConfig::Decolorize(_) => {
            Stage::Decolorize(compile("decolorize", r"\x1b\[[0-9;?]*[ -/]*[@-~]")?)
        }
        StageConfig::Multiline(c) => {
            if !top {
                return Err(invalid(
                    "multiline",
                    "only supported at the top level of pipeline_stages",
                ));
            }
            Stage::Multiline(Multiline {
                firstline: compile("multiline", &c.firstline)?,
                max_wait: c
                    .max_wait_time
                    .map(Duration::from)
                    .unwrap_or(Duration::from_secs(3)),
                max_lines: c.max_lines.unwrap_or(128).max(1),
                pending: None,
            })
        }
        StageConfig::Pack(c) => Stage::Pack {
            labels: c.labels.clone(),
            ingest_timestamp: c.ingest_timestamp.unwrap_or(true),
        },
        StageConfig::Metrics(c) => Stage::Metrics(MetricStage::new(c, custom)?),
        StageConfig::Sampling(c) => {
            if !(0.0..=1.0).contains(&c.rate) {
                return Err(invalid("sampling", "rate must be between 0 and 1"));
            }
            Stage::Sampling(c.rate)
        }
        StageConfig::Limit(c) => {
            if c.rate <= 0.0 || c.burst == 0 {
                return Err(invalid("limit", "rate and burst must be positive"));
            }
            Stage::Limit(Limiter {
                rate: c.rate,
                burst: c.burst as f64,
                drop: c.drop,
                by_label: c.by_label_name.clone(),
                max_distinct: c.max_distinct_labels.unwrap_or(10_000).max(1),
                buckets: std::collections::HashMap::new(),
                throttle_until: None,
            })
        }
        StageConfig::Docker(_) => Stage::Docker,
        StageConfig::Cri(c) => Stage::Cri {
            partial: None,
            max_partial_lines: c
                .as_ref()
                .and_then(|c| c.max_partial_lines)
                .unwrap_or(100)
                .max(1),
            partial_lines: 0,
        },
    })
}

fn checked_names(
    stage: &'static str,
    pairs: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, StageError> {
    for (name, _) in &pairs {
        if !lucia_common::labels::is_valid_label_name(name) {
            return Err(invalid(stage, format!("invalid label name {name:?}")));
        }
    }
    Ok(pairs)
}

/// `{app="x"} |= "foo" != "bar" |~ "re" !~ "re"`.
fn parse_match_selector(selector: &str) -> Result<(Vec<Matcher>, Vec<LineFilter>), StageError> {
    let selector = selector.trim();
    let end = selector
        .find('}')
        .ok_or_else(|| invalid("match", format!("invalid selector {selector:?}")))?;
    let matchers = lucia_common::matchers::parse_selector(&selector[..=end])
        .map_err(|e| invalid("match", format!("invalid selector {selector:?}: {e}")))?;
    let mut filters = Vec::new();
    let mut rest = selector[end + 1..].trim_start();
    while !rest.is_empty() {
        let op = rest.get(..2).unwrap_or("");
        if !matches!(op, "|=" | "!=" | "|~" | "!~") {
            return Err(invalid(
                "match",
                format!("unsupported expression after the selector: {rest:?}"),
            ));
        }
        rest = rest[2..].trim_start();
        let start = rest.len() - rest.trim_start().len();
        let (value, used) = lucia_common::labels::unquote(rest, start)
            .map_err(|(_, e)| invalid("match", format!("selector {selector:?}: {e}")))?;
        rest = rest[used..].trim_start();
        filters.push(match op {
            "|=" => LineFilter::Contains(value),
            "!=" => LineFilter::NotContains(value),
            "|~" => LineFilter::Matches(compile("match", &value)?),
            _ => LineFilter::NotMatches(compile("match", &value)?),
        });
    }
    Ok((matchers, filters))
}

fn run_from(
    stages: &mut [Stage],
    start: usize,
    mut entry: Entry,
    out: &mut Vec<Entry>,
    inspect: bool,
) {
    for i in start..stages.len() {
        match &mut stages[i] {
            Stage::Multiline(m) => {
                let now = Instant::now();
                if m.firstline.is_match(&entry.line) || m.pending.is_none() {
                    let previous = m.pending.replace((entry, 1, now)).map(|(e, _, _)| e);
                    if let Some(previous) = previous {
                        run_from(stages, i + 1, previous, out, inspect);
                    }
                    return;
                }
                if let Some((pending, count, _)) = &mut m.pending {
                    pending.line.push('\n');
                    pending.line.push_str(&entry.line);
                    pending.offset = entry.offset;
                    pending.fingerprint = entry.fingerprint;
                    *count += 1;
                    if *count >= m.max_lines {
                        let full = m.pending.take().map(|(e, _, _)| e);
                        if let Some(full) = full {
                            run_from(stages, i + 1, full, out, inspect);
                        }
                    }
                }
                return;
            }
            Stage::Match {
                matchers,
                filters,
                drop,
                stages: nested,
            } => {
                if matches_entry(matchers, filters, &entry) {
                    if *drop {
                        return;
                    }
                    let mut produced = Vec::new();
                    nested.process(entry, &mut produced);
                    for e in produced {
                        run_from(stages, i + 1, e, out, inspect);
                    }
                    return;
                }
            }
            stage => {
                let before = inspect.then(|| entry.clone());
                let kept = apply(stage, &mut entry);
                if let Some(before) = before {
                    eprintln!(
                        "{}",
                        describe_changes(stage_name(stage), &before, &entry, kept)
                    );
                }
                if !kept {
                    return;
                }
            }
        }
    }
    out.push(entry);
}

fn stage_name(stage: &Stage) -> &'static str {
    match stage {
        Stage::Regex { .. } => "regex",
        Stage::Json { .. } => "json",
        Stage::Logfmt { .. } => "logfmt",
        Stage::Replace { .. } => "replace",
        Stage::Template { .. } => "template",
        Stage::Labels(_) => "labels",
        Stage::StructuredMetadata(_) => "structured_metadata",
        Stage::StaticLabels(_) => "static_labels",
        Stage::LabelDrop(_) => "labeldrop",
        Stage::LabelAllow(_) => "labelallow",
        Stage::Timestamp { .. } => "timestamp",
        Stage::Output(_) => "output",
        Stage::Tenant(_) => "tenant",
        Stage::Match { .. } => "match",
        Stage::Drop(_) => "drop",
        Stage::Decolorize(_) => "decolorize",
        Stage::Multiline(_) => "multiline",
        Stage::Docker => "docker",
        Stage::Cri { .. } => "cri",
        Stage::Pack { .. } => "pack",
        Stage::Sampling(_) => "sampling",
        Stage::Limit(_) => "limit",
        Stage::Metrics(_) => "metrics",
    }
}

/// `--inspect` output: what a stage changed in an entry.
pub fn describe_changes(stage: &str, before: &Entry, after: &Entry, kept: bool) -> String {
    let mut out = format!("[inspect: {stage} stage]:");
    let mut changed = false;
    if !kept {
        out.push_str("\n\tentry dropped");
        return out;
    }
    for (k, v) in &after.extracted {
        if before.extracted.get(k) != Some(v) {
            out.push_str(&format!("\n\textracted[{k:?}]: {v:?}"));
            changed = true;
        }
    }
    let maps = [
        ("labels", &before.labels, &after.labels),
        (
            "structured_metadata",
            &before.structured_metadata,
            &after.structured_metadata,
        ),
    ];
    for (what, b, a) in maps {
        if b != a {
            out.push_str(&format!("\n\t{what}: {b:?} -> {a:?}"));
            changed = true;
        }
    }
    if before.line != after.line {
        out.push_str(&format!("\n\tline: {:?} -> {:?}", before.line, after.line));
        changed = true;
    }
    if before.timestamp != after.timestamp {
        out.push_str(&format!(
            "\n\ttimestamp: {} -> {}",
            lucia_common::time::format_rfc3339_nanos(before.timestamp),
            lucia_common::time::format_rfc3339_nanos(after.timestamp)
        ));
        changed = true;
    }
    if before.tenant != after.tenant {
        out.push_str(&format!(
            "\n\ttenant: {:?} -> {:?}",
            before.tenant, after.tenant
        ));
        changed = true;
    }
    if !changed {
        out.push_str(" none");
    }
    out
}

fn matches_entry(matchers: &[Matcher], filters: &[LineFilter], entry: &Entry) -> bool {
    let ok = matchers
        .iter()
        .all(|m| m.matches_value(entry.labels.get(&m.name).map(String::as_str).unwrap_or("")));
    ok && filters.iter().all(|f| match f {
        LineFilter::Contains(s) => entry.line.contains(s.as_str()),
        LineFilter::NotContains(s) => !entry.line.contains(s.as_str()),
        LineFilter::Matches(re) => re.is_match(&entry.line),
        LineFilter::NotMatches(re) => !re.is_match(&entry.line),
    })
}

fn source_value<'a>(entry: &'a Entry, source: &Option<String>) -> Option<&'a str> {
    match source {
        None => Some(&entry.line),
        Some(s) => entry.extracted.get(s).map(String::as_str),
    }
}

struct TemplateInput<'a> {
    entry: &'a Entry,
    value: &'a str,
}

impl TemplateData for TemplateInput<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        match name {
            "Value" => Some(self.value),
            "Entry" => Some(&self.entry.line),
            _ => self.entry.extracted.get(name).map(String::as_str),
        }
    }
    fn line(&self) -> &str {
        &self.entry.line
    }
    fn timestamp_nanos(&self) -> i64 {
        self.entry.timestamp
    }
}

/// Applies a stateless stage; `false` drops the entry.
fn apply(stage: &mut Stage, entry: &mut Entry) -> bool {
    match stage {
        Stage::Regex { re, source } => {
            let Some(text) = source_value(entry, source) else {
                return true;
            };
            if let Some(caps) = re.captures(text) {
                let found: Vec<(String, String)> = re
                    .capture_names()
                    .flatten()
                    .filter_map(|name| {
                        caps.name(name)
                            .map(|m| (name.to_string(), m.as_str().to_string()))
                    })
                    .collect();
                entry.extracted.extend(found);
            }
        }
        Stage::Json {
            expressions,
            source,
            drop_malformed,
        } => {
            let Some(text) = source_value(entry, source) else {
                return true;
            };
            match serde_json::from_str::<serde_json::Value>(text) {
                Ok(value) => {
                    for (name, path) in expressions.iter() {
                        if let Some(v) = eval_json_path(&value, path)
                            && let Some(s) = json_to_string(v)
                        {
                            entry.extracted.insert(name.clone(), s);
                        }
                    }
                }
                Err(_) => return !*drop_malformed,
            }
        }
        Stage::Logfmt { mapping, source } => {
            let Some(text) = source_value(entry, source) else {
                return true;
            };
            let parsed = parse_logfmt(text);
            for (name, key) in mapping.iter() {
                if let Some((_, v)) = parsed.iter().find(|(k, _)| k == key) {
                    entry.extracted.insert(name.clone(), v.clone());
                }
            }
            if mapping.is_empty() {
                entry.extracted.extend(parsed);
            }
        }
        Stage::Replace {
            re,
            source,
            replace,
        } => {
            let Some(text) = source_value(entry, source).map(str::to_string) else {
                return true;
            };
            let mut out = String::with_capacity(text.len());
            let mut last = 0;
            let mut named = Vec::new();
            for caps in re.captures_iter(&text) {
                let groups: Vec<_> = if caps.len() > 1 {
                    caps.iter().skip(1).flatten().collect()
                } else {
                    caps.get(0).into_iter().collect()
                };
                for m in groups {
                    if m.start() < last {
                        continue;
                    }
                    out.push_str(&text[last..m.start()]);
                    let input = TemplateInput {
                        entry,
                        value: m.as_str(),
                    };
                    if replace.execute(&input, &mut out).is_err() {
                        out.push_str(m.as_str());
                    }
                    last = m.end();
                }
                for name in re.capture_names().flatten() {
                    if let Some(m) = caps.name(name) {
                        named.push((name.to_string(), m.as_str().to_string()));
                    }
                }
            }
            out.push_str(&text[last..]);
            entry.extracted.extend(named);
            match source {
                None => entry.line = out,
                Some(s) => {
                    entry.extracted.insert(s.clone(), out);
                }
            }
        }
        Stage::Template { source, template } => {
            let value = entry.extracted.get(source).cloned().unwrap_or_default();
            let mut out = String::new();
            let input = TemplateInput {
                entry,
                value: &value,
            };
            match template.execute(&input, &mut out) {
                Ok(()) => {
                    entry.extracted.insert(source.clone(), out);
                }
                Err(err) => tracing::debug!(%err, "template stage failed"),
            }
        }
        Stage::Labels(pairs) => {
            for (name, source) in pairs.iter() {
                if let Some(v) = entry.extracted.get(source).filter(|v| !v.is_empty()) {
                    entry.labels.insert(name.clone(), v.clone());
                }
            }
        }
        Stage::StructuredMetadata(pairs) => {
            for (name, source) in pairs.iter() {
                if let Some(v) = entry.extracted.get(source).filter(|v| !v.is_empty()) {
                    entry.structured_metadata.insert(name.clone(), v.clone());
                }
            }
        }
        Stage::StaticLabels(pairs) => {
            for (name, value) in pairs.iter() {
                entry.labels.insert(name.clone(), value.clone());
            }
        }
        Stage::LabelDrop(names) => {
            for name in names.iter() {
                entry.labels.remove(name);
            }
        }
        Stage::LabelAllow(names) => entry.labels.retain(|k, _| names.contains(k)),
        Stage::Timestamp {
            source,
            formats,
            skip_on_failure,
            location,
        } => {
            let Some(value) = entry.extracted.get(source.as_str()) else {
                return true;
            };
            let parsed = formats
                .iter()
                .find_map(|f| parse_timestamp_in(f, value, location.as_deref()));
            match parsed {
                Some(ts) => entry.timestamp = ts,
                None if *skip_on_failure => {}
                // Fudge: keep the time the line was read.
                None => {}
            }
        }
        Stage::Output(source) => {
            if let Some(v) = entry.extracted.get(source.as_str()) {
                entry.line = v.clone();
            }
        }
        Stage::Tenant(c) => {
            let tenant = if let Some(v) = &c.value {
                Some(v.clone())
            } else if let Some(s) = &c.source {
                entry.extracted.get(s).cloned()
            } else if let Some(l) = &c.label {
                entry.labels.get(l).cloned()
            } else {
                None
            };
            if let Some(t) = tenant.filter(|t| !t.is_empty()) {
                entry.tenant = Some(t);
            }
        }
        Stage::Drop(d) => return !d.should_drop(entry),
        Stage::Decolorize(re) => {
            if let std::borrow::Cow::Owned(s) = re.replace_all(&entry.line, "") {
                entry.line = s;
            }
        }
        Stage::Docker => {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&entry.line) else {
                return true;
            };
            if let Some(stream) = value.get("stream").and_then(|v| v.as_str()) {
                entry
                    .labels
                    .insert("stream".to_string(), stream.to_string());
                entry
                    .extracted
                    .insert("stream".to_string(), stream.to_string());
            }
            if let Some(ts) = value
                .get("time")
                .and_then(|v| v.as_str())
                .and_then(|t| parse_timestamp("RFC3339Nano", t))
            {
                entry.timestamp = ts;
            }
            if let Some(log) = value.get("log").and_then(|v| v.as_str()) {
                entry.line = log.strip_suffix('\n').unwrap_or(log).to_string();
            }
        }
        Stage::Cri {
            partial,
            max_partial_lines,
            partial_lines,
        } => {
            let mut parts = entry.line.splitn(4, ' ');
            let (Some(time), Some(stream), Some(flags)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return true;
            };
            let content = parts.next().unwrap_or("").to_string();
            if let Some(ts) = parse_timestamp("RFC3339Nano", time) {
                entry.timestamp = ts;
            }
            entry
                .labels
                .insert("stream".to_string(), stream.to_string());
            entry
                .extracted
                .insert("stream".to_string(), stream.to_string());
            entry
                .extracted
                .insert("flags".to_string(), flags.to_string());
            let is_partial = flags.split(':').any(|f| f == "P");
            if is_partial && *partial_lines + 1 < *max_partial_lines {
                partial.get_or_insert_with(String::new).push_str(&content);
                *partial_lines += 1;
                return false;
            }
            let mut line = partial.take().unwrap_or_default();
            line.push_str(&content);
            *partial_lines = 0;
            entry.line = line;
        }
        Stage::Pack {
            labels,
            ingest_timestamp,
        } => {
            let mut object = serde_json::Map::new();
            for name in labels.iter() {
                let value = entry
                    .labels
                    .remove(name)
                    .or_else(|| entry.extracted.get(name).cloned());
                if let Some(v) = value {
                    object.insert(name.clone(), serde_json::Value::String(v));
                }
            }
            object.insert(
                "_entry".to_string(),
                serde_json::Value::String(std::mem::take(&mut entry.line)),
            );
            entry.line = serde_json::Value::Object(object).to_string();
            if *ingest_timestamp {
                entry.timestamp = lucia_common::time::now_nanos();
            }
        }
        Stage::Metrics(m) => m.observe(entry),
        Stage::Sampling(rate) => return rand::random::<f64>() < *rate,
        Stage::Limit(limiter) => return limiter.admit(entry),
        // Handled by run_from.
        Stage::Match { .. } | Stage::Multiline(_) => {}
    }
    true
}

impl DropStage {
    fn should_drop(&self, entry: &Entry) -> bool {
        let mut any_condition = false;
        let value = if self.sources.is_empty() {
            Some(entry.line.clone())
        } else {
            let values: Option<Vec<&str>> = self
                .sources
                .iter()
                .map(|s| entry.extracted.get(s).map(String::as_str))
                .collect();
            values.map(|v| v.join(&self.separator))
        };
        if !self.sources.is_empty() && self.expression.is_none() && self.value.is_none() {
            // Only sources: drop when they all exist.
            if value.is_none() {
                return false;
            }
            any_condition = true;
        }
        if let Some(re) = &self.expression {
            match &value {
                Some(v) if re.is_match(v) => any_condition = true,
                _ => return false,
            }
        }
        if let Some(expected) = &self.value {
            match &value {
                Some(v) if v == expected => any_condition = true,
                _ => return false,
            }
        }
        if let Some(age) = self.older_than {
            let cutoff = lucia_common::time::now_nanos()
                .saturating_sub(i64::try_from(age.as_nanos()).unwrap_or(i64::MAX));
            if entry.timestamp >= cutoff {
                return false;
            }
            any_condition = true;
        }
        if let Some(max) = self.longer_than {
            if entry.line.len() as u64 <= max {
                return false;
            }
            any_condition = true;
        }
        any_condition
    }
}

/// A JMESPath subset: `a.b`, `a[0]`, `"quoted.key"`, `a."b-c"[1].d`.
#[derive(Debug, Clone)]
enum PathPart {
    Key(String),
    Index(i64),
}

fn parse_json_path(expr: &str) -> Option<Vec<PathPart>> {
    let mut parts = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'.' if !parts.is_empty() => i += 1,
            b'"' => {
                let end = expr[i + 1..].find('"')? + i + 1;
                parts.push(PathPart::Key(expr[i + 1..end].to_string()));
                i = end + 1;
            }
            b'[' => {
                let end = expr[i..].find(']')? + i;
                let n: i64 = expr[i + 1..end].trim().parse().ok()?;
                parts.push(PathPart::Index(n));
                i = end + 1;
            }
            _ => {
                let start = i;
                while i < b.len() && !matches!(b[i], b'.' | b'[' | b'"') {
                    i += 1;
                }
                if start == i {
                    return None;
                }
                parts.push(PathPart::Key(expr[start..i].to_string()));
            }
        }
    }
    if parts.is_empty() { None } else { Some(parts) }
}

fn eval_json_path<'a>(
    value: &'a serde_json::Value,
    path: &[PathPart],
) -> Option<&'a serde_json::Value> {
    let mut current = value;
    for part in path {
        current = match part {
            PathPart::Key(k) => current.get(k)?,
            PathPart::Index(n) => {
                let arr = current.as_array()?;
                let idx = if *n < 0 {
                    arr.len().checked_sub(n.unsigned_abs() as usize)?
                } else {
                    usize::try_from(*n).ok()?
                };
                arr.get(idx)?
            }
        };
    }
    Some(current)
}

fn json_to_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Key/value pairs of a logfmt line (quoted values unescaped).
fn parse_logfmt(line: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut end = line.len();
        while let Some(&(i, c)) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                end = i;
                break;
            }
            chars.next();
        }
        let key = line[start..end].to_string();
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '=').is_some() {
            if chars.next_if(|(_, c)| *c == '"').is_some() {
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some((_, 'n')) => value.push('\n'),
                            Some((_, 't')) => value.push('\t'),
                            Some((_, other)) => value.push(other),
                            None => break,
                        },
                        c => value.push(c),
                    }
                }
            } else {
                while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                    value.push(c);
                }
            }
        }
        if !key.is_empty() {
            out.push((key, value));
        }
    }
    out
}

/// [`parse_timestamp`], with a layout that has no zone read as wall-clock
/// time in `location` (Go's `time.ParseInLocation`, as Promtail does).
pub fn parse_timestamp_in(
    format: &str,
    value: &str,
    location: Option<&lucia_common::timezone::Zone>,
) -> Option<i64> {
    let nanos = parse_timestamp(format, value)?;
    match location {
        Some(zone) if !layout_has_zone(format) => {
            const NS: i64 = 1_000_000_000;
            let utc = zone.local_to_utc(nanos.div_euclid(NS));
            utc.checked_mul(NS)?.checked_add(nanos.rem_euclid(NS))
        }
        _ => Some(nanos),
    }
}

/// Whether a timestamp in `format` carries its own zone or offset (Unix
/// times and RFC 3339 always do; Go layouts when they have `MST`, `Z07…`
/// or `-07…`).
fn layout_has_zone(format: &str) -> bool {
    match format {
        "Unix" | "UnixMs" | "UnixUs" | "UnixNs" | "RFC3339" | "RFC3339Nano" | "UnixDate"
        | "RubyDate" | "RFC822" | "RFC822Z" | "RFC850" | "RFC1123" | "RFC1123Z" => true,
        "ANSIC" | "Kitchen" | "Stamp" | "StampMilli" | "StampMicro" | "StampNano" => false,
        layout => layout.contains("MST") || layout.contains("Z07") || layout.contains("-07"),
    }
}

/// Parses a timestamp in one of Promtail's formats: a Go layout, a named
/// Go layout (`RFC3339`, ...), or `Unix`, `UnixMs`, `UnixUs`, `UnixNs`.
pub fn parse_timestamp(format: &str, value: &str) -> Option<i64> {
    let layout = match format {
        "Unix" => {
            let secs: f64 = value.parse().ok()?;
            return Some((secs * 1e9) as i64);
        }
        "UnixMs" => return value.parse::<i64>().ok()?.checked_mul(1_000_000),
        "UnixUs" => return value.parse::<i64>().ok()?.checked_mul(1_000),
        "UnixNs" => return value.parse().ok(),
        "RFC3339" | "RFC3339Nano" => {
            return chrono::DateTime::parse_from_rfc3339(value)
                .ok()?
                .timestamp_nanos_opt();
        }
        "ANSIC" => "Mon Jan _2 15:04:05 2006",
        "UnixDate" => "Mon Jan _2 15:04:05 MST 2006",
        "RubyDate" => "Mon Jan 02 15:04:05 -0700 2006",
        "RFC822" => "02 Jan 06 15:04 MST",
        "RFC822Z" => "02 Jan 06 15:04 -0700",
        "RFC850" => "Monday, 02-Jan-06 15:04:05 MST",
        "RFC1123" => "Mon, 02 Jan 2006 15:04:05 MST",
        "RFC1123Z" => "Mon, 02 Jan 2006 15:04:05 -0700",
        "Kitchen" => "3:04PM",
        "Stamp" => "Jan _2 15:04:05",
        "StampMilli" => "Jan _2 15:04:05.000",
        "StampMicro" => "Jan _2 15:04:05.000000",
        "StampNano" => "Jan _2 15:04:05.000000000",
        other => other,
    };
    // Go's `Z07:00` accepts a literal `Z` for UTC.
    if layout.contains("Z07") && value.ends_with('Z') {
        let fixed = format!("{}+00:00", &value[..value.len() - 1]);
        let layout = layout.replace("Z07:00", "-07:00").replace("Z0700", "-0700");
        let fixed = if layout.contains("-0700") {
            fixed.replace("+00:00", "+0000")
        } else {
            fixed
        };
        return lucia_logql::template::parse_go_layout(&layout, &fixed);
    }
    if !layout.contains("2006") && !layout.contains("06") && layout.contains("Jan") {
        // No year in the layout (syslog style): assume the current year.
        let year = chrono::Utc::now().format("%Y").to_string();
        return lucia_logql::template::parse_go_layout(
            &format!("2006 {layout}"),
            &format!("{year} {value}"),
        );
    }
    lucia_logql::template::parse_go_layout(layout, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipeline(yaml: &str) -> Pipeline {
        let configs: Vec<StageConfig> =
            lucia_common::config::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        Pipeline::new(&configs, &CustomMetrics::detached()).unwrap()
    }

    fn run(p: &mut Pipeline, line: &str) -> Vec<Entry> {
        let mut out = Vec::new();
        let labels = [("job".to_string(), "x".to_string())].into_iter().collect();
        p.process(Entry::new(labels, 7, line.to_string()), &mut out);
        out
    }

    #[test]
    fn regex_labels_timestamp_output() {
        let mut p = pipeline(
            r#"
- regex:
    expression: '^(?P<time>\S+) (?P<level>\w+) (?P<msg>.*)$'
- labels:
    level:
- timestamp:
    source: time
    format: RFC3339
- output:
    source: msg
"#,
        );
        let out = run(&mut p, "2024-01-02T03:04:05Z warn disk full");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels["level"], "warn");
        assert_eq!(out[0].timestamp, 1_704_164_645_000_000_000);
        assert_eq!(out[0].line, "disk full");
    }

    #[test]
    fn json_logfmt_template_tenant_drop_match() {
        let mut p = pipeline(
            r#"
- json:
    expressions:
      lvl: level
      user: 'ctx.user'
      first: 'items[0]'
- template:
    source: lvl
    template: '{{ ToUpper .Value }}'
- labels:
    lvl:
- tenant:
    source: user
- match:
    selector: '{lvl="DEBUG"}'
    action: drop
- match:
    selector: '{job="x"} |= "secret"'
    stages:
      - replace:
          expression: 'secret=(\w+)'
          replace: '***'
"#,
        );
        let out = run(
            &mut p,
            r#"{"level":"info","ctx":{"user":"acme"},"items":[5,6],"m":"secret=abc"}"#,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].labels["lvl"], "INFO");
        assert_eq!(out[0].tenant.as_deref(), Some("acme"));
        assert_eq!(out[0].extracted["first"], "5");
        assert!(out[0].line.contains("secret=***"), "{}", out[0].line);
        assert!(run(&mut p, r#"{"level":"debug"}"#).is_empty());

        let mut p = pipeline(
            "- logfmt:\n    mapping:\n      lvl: level\n      msg:\n- labels:\n    lvl:\n- output:\n    source: msg\n",
        );
        let out = run(&mut p, r#"level=error msg="a \"b\"" x=1"#);
        assert_eq!(out[0].labels["lvl"], "error");
        assert_eq!(out[0].line, r#"a "b""#);
    }

    #[test]
    fn multiline_joins_until_next_firstline() {
        let mut p = pipeline("- multiline:\n    firstline: '^\\d{4}'\n    max_wait_time: 1h\n");
        assert!(run(&mut p, "2024 start").is_empty());
        assert!(run(&mut p, "  at frame 1").is_empty());
        let out = run(&mut p, "2025 next");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line, "2024 start\n  at frame 1");
        let mut rest = Vec::new();
        p.flush(Instant::now(), true, &mut rest);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].line, "2025 next");
    }

    #[test]
    fn docker_cri_decolorize_drop() {
        let mut p = pipeline("- docker: {}\n");
        let out = run(
            &mut p,
            r#"{"log":"hello\n","stream":"stderr","time":"2024-01-02T03:04:05.5Z"}"#,
        );
        assert_eq!(out[0].line, "hello");
        assert_eq!(out[0].labels["stream"], "stderr");
        assert_eq!(out[0].timestamp, 1_704_164_645_500_000_000);

        let mut p = pipeline("- cri: {}\n");
        assert!(run(&mut p, "2024-01-02T03:04:05Z stdout P part1 ").is_empty());
        let out = run(&mut p, "2024-01-02T03:04:06Z stdout F part2");
        assert_eq!(out[0].line, "part1 part2");

        let mut p = pipeline("- decolorize:\n- drop:\n    expression: '^skip'\n");
        assert_eq!(run(&mut p, "\x1b[31mred\x1b[0m")[0].line, "red");
        assert!(run(&mut p, "skip me").is_empty());
    }

    #[test]
    fn metrics_stage_counts_and_observes() {
        let registry = lucia_common::metrics::Metrics::new();
        let custom = CustomMetrics::new(registry.clone());
        let yaml = r#"
- regex:
    expression: 'level=(?P<level>\w+) took=(?P<took>[\d.]+)'
- metrics:
    lines_total:
      type: Counter
      description: all lines
      config:
        match_all: true
    errors_total:
      type: Counter
      source: level
      config:
        value: error
    took_seconds:
      type: Histogram
      source: took
      config:
        buckets: [0.1, 1]
    last_took:
      type: Gauge
      source: took
      config:
        action: set
"#;
        let configs: Vec<StageConfig> =
            lucia_common::config::parse(std::path::Path::new("t.yaml"), yaml).unwrap();
        // Two pipelines (two files) share the series.
        let mut a = Pipeline::new(&configs, &custom).unwrap();
        let mut b = Pipeline::new(&configs, &custom).unwrap();
        run(&mut a, "level=error took=0.5");
        run(&mut b, "level=info took=2");
        let text = registry.encode();
        assert!(
            text.contains(r#"promtail_custom_lines_total{job="x"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"promtail_custom_errors_total{job="x"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"promtail_custom_took_seconds_bucket{le="1.0",job="x"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"promtail_custom_last_took{job="x"} 2"#),
            "{text}"
        );
        let bad: Vec<StageConfig> = lucia_common::config::parse(
            std::path::Path::new("t.yaml"),
            "- metrics:\n    x:\n      type: Summary\n",
        )
        .unwrap();
        assert!(Pipeline::new(&bad, &custom).is_err());
    }

    #[test]
    fn pack_sampling_limit() {
        let mut p = pipeline(
            "- static_labels:\n    pod: p1\n- pack:\n    labels: [pod]\n    ingest_timestamp: false\n",
        );
        let out = run(&mut p, "hello");
        assert_eq!(out[0].line, r#"{"_entry":"hello","pod":"p1"}"#);
        assert!(!out[0].labels.contains_key("pod"));
        assert_eq!(out[0].timestamp, 7);

        let mut p = pipeline("- sampling:\n    rate: 0\n");
        assert!(run(&mut p, "x").is_empty());
        let mut p = pipeline("- sampling:\n    rate: 1\n");
        assert_eq!(run(&mut p, "x").len(), 1);

        let mut p = pipeline("- limit:\n    rate: 1\n    burst: 2\n    drop: true\n");
        let kept: usize = (0..5).map(|_| run(&mut p, "x").len()).sum();
        assert_eq!(kept, 2);
        let mut p = pipeline("- limit:\n    rate: 10\n    burst: 1\n");
        let kept: usize = (0..3).map(|_| run(&mut p, "x").len()).sum();
        assert_eq!(kept, 3);
        let until = p.take_throttle().unwrap();
        let wait = until.saturating_duration_since(Instant::now());
        assert!(
            wait > Duration::from_millis(100) && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(p.take_throttle().is_none());
    }

    #[test]
    fn unknown_stage_is_an_error_with_line() {
        let err = lucia_common::config::parse::<Vec<StageConfig>>(
            std::path::Path::new("p.yaml"),
            "- regex:\n    expression: x\n- bogus: {}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("bogus") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn inspect_describes_changes() {
        let before = Entry::new(LabelMap::new(), 0, "a=1".to_string());
        let mut after = before.clone();
        after.extracted.insert("a".into(), "1".into());
        after.labels.insert("a".into(), "1".into());
        let text = describe_changes("logfmt", &before, &after, true);
        assert!(text.starts_with("[inspect: logfmt stage]:"), "{text}");
        assert!(text.contains(r#"extracted["a"]: "1""#), "{text}");
        assert!(text.contains(r#"labels: {} -> {"a": "1"}"#), "{text}");
        assert!(describe_changes("drop", &before, &before, false).contains("dropped"));
        assert!(describe_changes("x", &before, &before, true).ends_with("none"));
    }

    #[test]
    fn go_layouts() {
        assert_eq!(
            parse_timestamp("2006-01-02 15:04:05.000", "2024-01-02 03:04:05.250"),
            Some(1_704_164_645_250_000_000)
        );
        assert_eq!(
            parse_timestamp("02/Jan/2006:15:04:05 -0700", "02/Jan/2024:04:04:05 +0100"),
            Some(1_704_164_645_000_000_000)
        );
        assert_eq!(
            parse_timestamp("UnixMs", "1704164645000"),
            Some(1_704_164_645_000_000_000)
        );
        assert_eq!(parse_timestamp("RFC3339", "nope"), None);
    }

    #[test]
    fn timestamp_location_applies_to_layouts_without_zone() {
        if !std::path::Path::new("/usr/share/zoneinfo/Europe/Berlin").exists() {
            return;
        }
        let mut p = pipeline(
            r#"
- regex:
    expression: '^(?P<time>[^|]+)[|](?P<msg>.*)$'
- timestamp:
    source: time
    format: '2006-01-02 15:04:05'
    fallback_formats: ['2006-01-02T15:04:05Z07:00']
    location: Europe/Berlin
"#,
        );
        // Winter: Berlin is UTC+1, 12:00 local is 11:00 UTC.
        let out = run(&mut p, "2024-01-15 12:00:00|winter");
        assert_eq!(out[0].timestamp, 1_705_316_400_000_000_000);
        // Summer (DST): UTC+2, 12:00 local is 10:00 UTC.
        let out = run(&mut p, "2024-07-15 12:00:00|summer");
        assert_eq!(out[0].timestamp, 1_721_037_600_000_000_000);
        // A timestamp with its own offset ignores the location.
        let out = run(&mut p, "2024-07-15T12:00:00Z|x");
        assert_eq!(out[0].timestamp, 1_721_044_800_000_000_000);
        // Unix times are absolute.
        assert_eq!(
            parse_timestamp_in(
                "Unix",
                "1721044800",
                Some(&lucia_common::timezone::Zone::load("Europe/Berlin").unwrap())
            ),
            Some(1_721_044_800_000_000_000)
        );
    }

    #[test]
    fn unknown_timestamp_location_is_a_config_error() {
        let err = lucia_common::config::parse::<Vec<StageConfig>>(
            std::path::Path::new("/etc/promtail.yaml"),
            "- timestamp:\n    source: t\n    format: RFC3339\n    location: Mars/Olympus_Mons\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/etc/promtail.yaml")
                && err.contains("line 4")
                && err.contains("location")
                && err.contains("Mars/Olympus_Mons"),
            "{err}"
        );
    }
}
