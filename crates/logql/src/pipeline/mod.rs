//! The log pipeline: a query's stages compiled once ([`Pipeline`]), then
//! run per stream ([`StreamPipeline`]) over every line, with Loki 3
//! semantics.
//!
//! ```ignore
//! let pipeline = Pipeline::new(&log_expr.stages)?;
//! let mut stream = pipeline.for_stream(&stream_labels);
//! for entry in entries {
//!     if let Some(out) = stream.process(entry.ts, &entry.line, &entry.metadata) {
//!         // out.line: &str, out.labels: &Arc<LabelsResult> (hash cached)
//!     }
//! }
//! ```

mod format;
mod ip;
mod json;
mod label_filter;
pub mod labels;
mod line_filter;
mod logfmt;
mod pattern;
mod sanitize;
mod unwrap;

use std::sync::Arc;

use lucia_common::labels::Labels;
use regex::Regex;

use crate::ast;
pub use label_filter::{parse_bytes, parse_go_duration, parse_go_float};
pub use labels::{LabelCategory, LabelsBuilder, LabelsResult};

use format::{DropKeep, LabelFormatStage, LineFormatStage, decolorize};
use json::{JsonScratch, PathPart};
use label_filter::LabelFilterStage;
use line_filter::LineFilterStage;
use logfmt::LogfmtScratch;
use pattern::Pattern;
pub use unwrap::UnwrapStage;

/// Errors building a pipeline (all of them at query parse time).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PipelineError {
    #[error("error parsing regexp {0:?}: {1}")]
    Regex(String, String),
    #[error("ip: invalid pattern {0:?}: use an address, a range a-b or a CIDR a/n")]
    InvalidIp(String),
    #[error("ip: invalid operation: ip() works only with |=, != and label = or !=")]
    IpOperation,
    #[error("pattern: {0}")]
    Pattern(String),
    #[error("at least one named capture must be supplied in regexp {0:?}")]
    MissingCapture(String),
    #[error("duplicate extracted label name {0:?} in regexp")]
    DuplicateCapture(String),
    #[error("invalid extracted label name {0:?}: use [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabelName(String),
    #[error("cannot parse expression {0:?}: use a.b, a[0] or [\"key\"] paths")]
    JsonExpression(String),
    #[error("template: {0}")]
    Template(#[from] crate::template::TemplateError),
    #[error("multiple label name {0:?} not allowed in a single label_format operation")]
    DuplicateLabelFormat(String),
}

#[derive(Debug)]
enum StageImpl {
    LineFilter(LineFilterStage),
    Json,
    JsonExpr(Vec<(String, Vec<PathPart>)>),
    Logfmt {
        strict: bool,
        keep_empty: bool,
    },
    LogfmtExpr {
        strict: bool,
        exprs: Vec<(String, String)>,
    },
    Regexp {
        re: Regex,
        names: Vec<Option<String>>,
    },
    Pattern(Pattern),
    Unpack,
    LabelFilter(LabelFilterStage),
    LineFormat(LineFormatStage),
    LabelFormat(LabelFormatStage),
    Decolorize,
    Drop(DropKeep),
    Keep(DropKeep),
}

/// A compiled pipeline; cheap to share (`Arc`) between streams.
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Arc<Vec<StageImpl>>,
    unwrap: Option<Arc<UnwrapStage>>,
}

fn build_regexp(src: &str) -> Result<StageImpl, PipelineError> {
    let re = Regex::new(src).map_err(|e| PipelineError::Regex(src.to_string(), e.to_string()))?;
    let mut names: Vec<Option<String>> = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for name in re.capture_names() {
        if let Some(n) = name {
            if !lucia_common::labels::is_valid_label_name(n) {
                return Err(PipelineError::InvalidLabelName(n.to_string()));
            }
            if seen.contains(&n) {
                return Err(PipelineError::DuplicateCapture(n.to_string()));
            }
            seen.push(n);
        }
        names.push(name.map(str::to_string));
    }
    if seen.is_empty() {
        return Err(PipelineError::MissingCapture(src.to_string()));
    }
    Ok(StageImpl::Regexp { re, names })
}

impl Pipeline {
    /// Compiles the stages of a log query.
    pub fn new(stages: &[ast::Stage]) -> Result<Self, PipelineError> {
        let mut out = Vec::with_capacity(stages.len());
        for stage in stages {
            out.push(match stage {
                ast::Stage::LineFilter(f) => StageImpl::LineFilter(LineFilterStage::new(f)?),
                ast::Stage::Parser(ast::Parser::Json { expressions }) if expressions.is_empty() => {
                    StageImpl::Json
                }
                ast::Stage::Parser(ast::Parser::Json { expressions }) => {
                    let mut exprs = Vec::with_capacity(expressions.len());
                    for (label, expr) in expressions {
                        if !lucia_common::labels::is_valid_label_name(label) {
                            return Err(PipelineError::InvalidLabelName(label.clone()));
                        }
                        exprs.push((label.clone(), json::parse_expression(expr)?));
                    }
                    StageImpl::JsonExpr(exprs)
                }
                ast::Stage::Parser(ast::Parser::Logfmt {
                    strict,
                    keep_empty,
                    expressions,
                }) => {
                    if expressions.is_empty() {
                        StageImpl::Logfmt {
                            strict: *strict,
                            keep_empty: *keep_empty,
                        }
                    } else {
                        for (label, _) in expressions {
                            if !lucia_common::labels::is_valid_label_name(label) {
                                return Err(PipelineError::InvalidLabelName(label.clone()));
                            }
                        }
                        StageImpl::LogfmtExpr {
                            strict: *strict,
                            exprs: expressions.clone(),
                        }
                    }
                }
                ast::Stage::Parser(ast::Parser::Regexp(src)) => build_regexp(src)?,
                ast::Stage::Parser(ast::Parser::Pattern(src)) => {
                    StageImpl::Pattern(Pattern::parser(src)?)
                }
                ast::Stage::Parser(ast::Parser::Unpack) => StageImpl::Unpack,
                ast::Stage::LabelFilter(f) => StageImpl::LabelFilter(LabelFilterStage::new(f)?),
                ast::Stage::LineFormat(src) => StageImpl::LineFormat(LineFormatStage::new(src)?),
                ast::Stage::LabelFormat(ops) => StageImpl::LabelFormat(LabelFormatStage::new(ops)?),
                ast::Stage::Decolorize => StageImpl::Decolorize,
                ast::Stage::Drop(sel) => StageImpl::Drop(DropKeep::new(sel)),
                ast::Stage::Keep(sel) => StageImpl::Keep(DropKeep::new(sel)),
            });
        }
        Ok(Self {
            stages: Arc::new(out),
            unwrap: None,
        })
    }

    /// Compiles the stages of a metric query's log range with its `unwrap`.
    pub fn with_unwrap(stages: &[ast::Stage], unwrap: &ast::Unwrap) -> Result<Self, PipelineError> {
        let mut p = Self::new(stages)?;
        p.unwrap = Some(Arc::new(UnwrapStage::new(unwrap)?));
        Ok(p)
    }

    /// Whether the pipeline has no stages (lines and labels pass unchanged).
    pub fn is_noop(&self) -> bool {
        self.stages.is_empty() && self.unwrap.is_none()
    }

    /// The per-stream state for a stream with these labels.
    pub fn for_stream(&self, labels: &Labels) -> StreamPipeline {
        StreamPipeline {
            stages: self.stages.clone(),
            unwrap: self.unwrap.clone(),
            builder: LabelsBuilder::new(labels.clone()),
            line_buf: String::new(),
            scratch_buf: String::new(),
            fold_buf: Vec::new(),
            json: JsonScratch::default(),
            logfmt: LogfmtScratch::default(),
            name_buf: String::new(),
            result: None,
        }
    }
}

/// One processed line: the (possibly rewritten) line and its labels.
#[derive(Debug, Clone, Copy)]
pub struct Processed<'a> {
    pub line: &'a str,
    pub labels: &'a Arc<LabelsResult>,
}

/// A pipeline bound to one stream; holds the buffers reused from line to
/// line. Not `Sync`: one per stream per thread.
#[derive(Debug)]
pub struct StreamPipeline {
    stages: Arc<Vec<StageImpl>>,
    unwrap: Option<Arc<UnwrapStage>>,
    builder: LabelsBuilder,
    line_buf: String,
    scratch_buf: String,
    fold_buf: Vec<u8>,
    json: JsonScratch,
    logfmt: LogfmtScratch,
    name_buf: String,
    result: Option<Arc<LabelsResult>>,
}

impl StreamPipeline {
    /// The stream's own labels.
    pub fn stream_labels(&self) -> &Labels {
        self.builder.base()
    }

    /// Runs the stages over one line. `None` when a stage filtered it out.
    pub fn process<'a>(
        &'a mut self,
        ts: i64,
        line: &'a str,
        structured_metadata: &[(String, String)],
    ) -> Option<Processed<'a>> {
        let rewritten = self.run(ts, line, structured_metadata)?;
        self.result = Some(self.builder.result());
        let labels = self.result.as_ref()?;
        Some(Processed {
            line: if rewritten { &self.line_buf } else { line },
            labels,
        })
    }

    /// Runs the stages and the unwrap over one line: the sample value and
    /// its labels (without the unwrapped label). `None` when the line was
    /// filtered out or has no value for the label. Without an unwrap the
    /// value is 1.
    pub fn process_sample(
        &mut self,
        ts: i64,
        line: &str,
        structured_metadata: &[(String, String)],
    ) -> Option<(f64, &Arc<LabelsResult>)> {
        self.run(ts, line, structured_metadata)?;
        let value = match self.unwrap.clone() {
            Some(u) => u.extract(&mut self.builder)?,
            None => 1.0,
        };
        self.result = Some(self.builder.result());
        Some((value, self.result.as_ref()?))
    }

    /// Returns Some(rewritten) when the line passes; the rewritten line
    /// is in `line_buf`.
    fn run(&mut self, ts: i64, input: &str, metadata: &[(String, String)]) -> Option<bool> {
        let b = &mut self.builder;
        b.reset();
        if !metadata.is_empty() {
            b.add_structured_metadata(metadata);
        }
        let mut rewritten = false;
        for stage in self.stages.iter() {
            let line: &str = if rewritten { &self.line_buf } else { input };
            match stage {
                StageImpl::LineFilter(f) => {
                    if !f.keep(line, &mut self.fold_buf) {
                        return None;
                    }
                }
                StageImpl::Json => json::parse_all(line, b, &mut self.json),
                StageImpl::JsonExpr(exprs) => {
                    json::parse_expressions(line, exprs, b, &mut self.name_buf)
                }
                StageImpl::Logfmt { strict, keep_empty } => {
                    logfmt::parse_all(line, *strict, *keep_empty, b, &mut self.logfmt)
                }
                StageImpl::LogfmtExpr { strict, exprs } => {
                    logfmt::parse_expressions(line, *strict, exprs, b, &mut self.logfmt)
                }
                StageImpl::Regexp { re, names } => {
                    if let Some(caps) = re.captures(line) {
                        for (i, name) in names.iter().enumerate() {
                            if let (Some(name), Some(m)) = (name, caps.get(i)) {
                                b.add_parsed(name, m.as_str());
                            }
                        }
                    }
                }
                StageImpl::Pattern(p) => p.captures(line, |n, v| b.add_parsed(n, v)),
                StageImpl::Unpack => {
                    if json::unpack(line, b, &mut self.json, &mut self.scratch_buf) {
                        std::mem::swap(&mut self.line_buf, &mut self.scratch_buf);
                        rewritten = true;
                    }
                }
                StageImpl::LabelFilter(f) => {
                    if !f.keep(b) {
                        return None;
                    }
                }
                StageImpl::LineFormat(f) => {
                    if f.render(ts, line, b, &mut self.scratch_buf) {
                        std::mem::swap(&mut self.line_buf, &mut self.scratch_buf);
                        rewritten = true;
                    }
                }
                StageImpl::LabelFormat(f) => f.apply(ts, line, b, &mut self.scratch_buf),
                StageImpl::Decolorize => {
                    if decolorize(line, &mut self.scratch_buf) {
                        std::mem::swap(&mut self.line_buf, &mut self.scratch_buf);
                        rewritten = true;
                    }
                }
                StageImpl::Drop(d) => d.drop(b),
                StageImpl::Keep(k) => k.keep(b),
            }
        }
        Some(rewritten)
    }
}

#[cfg(test)]
mod tests;
