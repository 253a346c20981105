//! The LogQL syntax tree.
//!
//! One tree for log queries (`{app="x"} |= "err" | json`) and metric queries
//! (`sum by (level) (count_over_time({app="x"}[1m]))`). Durations are
//! `std::time::Duration`; label matchers reuse `lucia_common::matchers`.

use std::time::Duration;

use lucia_common::matchers::Matcher;

/// A whole query.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Log(LogExpr),
    Metric(MetricExpr),
}

/// A stream selector and its pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct LogExpr {
    pub matchers: Vec<Matcher>,
    pub stages: Vec<Stage>,
}

/// One pipeline stage, in query order.
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// `|= "a"`, `!= "a" or "b"`, `|~ "re"`, `|> "<_> pattern"`, `|= ip("10.0.0.0/8")`.
    LineFilter(LineFilter),
    Parser(Parser),
    /// `| level="error" and status >= 500`.
    LabelFilter(LabelFilter),
    /// `| line_format "{{.msg}}"`: the template source.
    LineFormat(String),
    /// `| label_format dst=src, other="{{.a}}"`.
    LabelFormat(Vec<LabelFormatOp>),
    /// `| decolorize`.
    Decolorize,
    /// `| drop a, b="x"`.
    Drop(Vec<LabelSelector>),
    /// `| keep a, b="x"`.
    Keep(Vec<LabelSelector>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineFilterOp {
    /// `|=`
    Contains,
    /// `!=`
    NotContains,
    /// `|~` (unanchored regex)
    Regex,
    /// `!~`
    NotRegex,
    /// `|>`
    Pattern,
    /// `!>`
    NotPattern,
}

/// A line filter. Several `values` come from an `or` chain
/// (`|= "a" or "b"`): a positive filter keeps a line matching any of them, a
/// negative one drops a line matching any of them.
#[derive(Debug, Clone, PartialEq)]
pub struct LineFilter {
    pub op: LineFilterOp,
    pub values: Vec<LineFilterValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LineFilterValue {
    /// A string (literal, regex or pattern according to the operator).
    Text(String),
    /// `ip("192.168.0.0/16")`, only with `|=` and `!=`.
    Ip(String),
}

/// Parser stages; `expressions` are `(label, expression)` pairs such as
/// `json first="servers[0]"` or `logfmt msg, lvl="level"` (a bare name is
/// `(name, name)`).
#[derive(Debug, Clone, PartialEq)]
pub enum Parser {
    Json {
        expressions: Vec<(String, String)>,
    },
    Logfmt {
        strict: bool,
        keep_empty: bool,
        expressions: Vec<(String, String)>,
    },
    /// `regexp "(?P<name>...)"`: the regex source.
    Regexp(String),
    /// `pattern "<ip> - <_> ..."`: the pattern source.
    Pattern(String),
    Unpack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==` or `=`
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

/// A label filter expression.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFilter {
    /// `a and b`, `a, b`, `a | b` juxtaposed with `and` semantics.
    And(Box<LabelFilter>, Box<LabelFilter>),
    Or(Box<LabelFilter>, Box<LabelFilter>),
    /// `name = "v"`, `name != "v"`, `name =~ "re"`, `name !~ "re"`.
    String(Matcher),
    /// `status >= 500`, `ratio == 0.5`.
    Number {
        name: String,
        op: CmpOp,
        value: f64,
    },
    /// `latency > 250ms`.
    Duration {
        name: String,
        op: CmpOp,
        value: Duration,
    },
    /// `size > 20KB` (bytes).
    Bytes {
        name: String,
        op: CmpOp,
        value: u64,
    },
    /// `addr = ip("10.0.0.0/8")` (`op` is `Eq` or `Ne`).
    Ip {
        name: String,
        op: CmpOp,
        cidr: String,
    },
}

/// `dst=src` renames a label, `dst="{{template}}"` renders one.
#[derive(Debug, Clone, PartialEq)]
pub enum LabelFormatOp {
    Rename { dst: String, src: String },
    Template { dst: String, template: String },
}

/// A `drop`/`keep` argument: a label name, or a matcher that must also
/// match the value (`level="debug"`).
#[derive(Debug, Clone, PartialEq)]
pub enum LabelSelector {
    Name(String),
    Matcher(Matcher),
}

/// `| unwrap latency`, `| unwrap bytes(size)`, `| unwrap duration(d)`, with
/// the label filters that follow it (applied to the unwrapped samples).
#[derive(Debug, Clone, PartialEq)]
pub struct Unwrap {
    pub label: String,
    pub conversion: Option<UnwrapConversion>,
    pub post_filters: Vec<LabelFilter>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnwrapConversion {
    Bytes,
    /// `duration()` and `duration_seconds()`: both yield seconds.
    Duration,
    DurationSeconds,
}

/// A log expression over a range: `{app="x"} | json [5m] offset 1h`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogRange {
    pub log: LogExpr,
    pub range: Duration,
    pub unwrap: Option<Unwrap>,
    /// Positive: look back further.
    pub offset: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOp {
    CountOverTime,
    Rate,
    RateCounter,
    BytesOverTime,
    BytesRate,
    AvgOverTime,
    SumOverTime,
    MinOverTime,
    MaxOverTime,
    StdvarOverTime,
    StddevOverTime,
    QuantileOverTime,
    FirstOverTime,
    LastOverTime,
    AbsentOverTime,
}

/// `by (a, b)` or `without (a)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grouping {
    pub without: bool,
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RangeAggregation {
    pub op: RangeOp,
    pub range: LogRange,
    /// The φ of `quantile_over_time(0.99, ...)`.
    pub param: Option<f64>,
    /// Only for the unwrapped `*_over_time` functions that allow it.
    pub grouping: Option<Grouping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorOp {
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    Stdvar,
    Count,
    Topk,
    Bottomk,
    Sort,
    SortDesc,
    /// `approx_topk(k, ...)`: Loki's probabilistic topk (instant queries
    /// only, no grouping).
    ApproxTopk,
}

#[derive(Debug, Clone, PartialEq)]
pub struct VectorAggregation {
    pub op: VectorOp,
    pub expr: Box<MetricExpr>,
    /// The k of `topk(k, ...)`.
    pub param: Option<i64>,
    pub grouping: Option<Grouping>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    And,
    Or,
    Unless,
}

/// `on (a)` / `ignoring (a)`, optionally with `group_left (b)` / `group_right`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VectorMatching {
    /// `on` when true, `ignoring` when false.
    pub on: bool,
    pub labels: Vec<String>,
    pub group: Option<GroupModifier>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupModifier {
    /// `group_left` when true, `group_right` when false.
    pub left: bool,
    pub include: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BinaryExpr {
    pub op: BinaryOp,
    pub lhs: Box<MetricExpr>,
    pub rhs: Box<MetricExpr>,
    /// `bool` after a comparison operator.
    pub return_bool: bool,
    pub matching: Option<VectorMatching>,
}

/// A metric query.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricExpr {
    Range(RangeAggregation),
    Vector(VectorAggregation),
    Binary(BinaryExpr),
    /// A number literal: a scalar.
    Literal(f64),
    /// `vector(1)`.
    VectorLiteral(f64),
    /// `label_replace(expr, "dst", "replacement", "src", "regex")`.
    LabelReplace {
        expr: Box<MetricExpr>,
        dst: String,
        replacement: String,
        src: String,
        regex: String,
    },
    /// `( expr )`, kept so that `format_query` can print what was written.
    Paren(Box<MetricExpr>),
}
