//! The LogQL parser: a recursive-descent parser for the grammar Loki 3
//! accepts, with Loki's error wording where practical.

use std::time::Duration;

use lucia_common::labels::is_valid_label_name;
use lucia_common::matchers::{MatchOp, Matcher, MatcherError};

use crate::ast::*;
use crate::lexer::{Kw, Tok, Token, tokenize};

/// Loki refuses queries this long or longer.
pub const MAX_QUERY_SIZE: usize = 131_072;
/// How deeply expressions may nest (parentheses, aggregations, filter chains).
const MAX_DEPTH: usize = 200;
/// How many binary nodes (operators, `and`/`or` filters) one query may have.
const MAX_BINARY_NODES: usize = 500;

const ERR_EMPTY_SELECTOR: &str = "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will";

/// A query that does not parse, with the position of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parse error at line {line}, col {column}: {message}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// Byte offset in the query.
    pub offset: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(input: &str, offset: usize, message: impl Into<String>) -> Self {
        let mut offset = offset.min(input.len());
        while !input.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &input[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self {
            line,
            column,
            offset,
            message: message.into(),
        }
    }
}

/// Parses a LogQL query (a log query or a metric query).
pub fn parse(input: &str) -> Result<Expr, ParseError> {
    if input.len() >= MAX_QUERY_SIZE {
        return Err(ParseError::new(
            input,
            0,
            format!("input size too long ({} > {MAX_QUERY_SIZE})", input.len()),
        ));
    }
    let tokens = tokenize(input)?;
    let mut parser = QueryParser {
        input,
        tokens,
        pos: 0,
        depth: 0,
        binary_nodes: 0,
    };
    let node = parser.expr(0)?;
    if parser.peek() != &Tok::Eof {
        return Err(parser.unexpected(&[]));
    }
    Ok(match node.kind {
        NodeKind::Log(log) => Expr::Log(log),
        NodeKind::Metric(metric) => Expr::Metric(metric),
    })
}

/// Parses a log query; a metric query is an error.
pub fn parse_log_expr(input: &str) -> Result<LogExpr, ParseError> {
    match parse(input)? {
        Expr::Log(log) => Ok(log),
        Expr::Metric(_) => Err(ParseError::new(
            input,
            0,
            "expected a log query such as {app=\"x\"} |= \"error\", got a metric query",
        )),
    }
}

/// Parses a metric query; a log query is an error.
pub fn parse_metric_expr(input: &str) -> Result<MetricExpr, ParseError> {
    match parse(input)? {
        Expr::Metric(metric) => Ok(metric),
        Expr::Log(_) => Err(ParseError::new(
            input,
            0,
            "expected a metric query such as count_over_time({app=\"x\"}[5m]), got a log query",
        )),
    }
}

enum NodeKind {
    Log(LogExpr),
    Metric(MetricExpr),
}

struct Node {
    kind: NodeKind,
    start: usize,
}

struct QueryParser<'a> {
    input: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    depth: usize,
    binary_nodes: usize,
}

fn binary_op(tok: &Tok) -> Option<(BinaryOp, u8)> {
    Some(match tok {
        Tok::Kw(Kw::Or) => (BinaryOp::Or, 1),
        Tok::Kw(Kw::And) => (BinaryOp::And, 2),
        Tok::Kw(Kw::Unless) => (BinaryOp::Unless, 2),
        Tok::CmpEq => (BinaryOp::Eq, 3),
        Tok::Neq => (BinaryOp::Ne, 3),
        Tok::Gt => (BinaryOp::Gt, 3),
        Tok::Ge => (BinaryOp::Ge, 3),
        Tok::Lt => (BinaryOp::Lt, 3),
        Tok::Le => (BinaryOp::Le, 3),
        Tok::Add => (BinaryOp::Add, 4),
        Tok::Sub => (BinaryOp::Sub, 4),
        Tok::Mul => (BinaryOp::Mul, 5),
        Tok::Div => (BinaryOp::Div, 5),
        Tok::Mod => (BinaryOp::Mod, 5),
        Tok::Pow => (BinaryOp::Pow, 6),
        _ => return None,
    })
}

pub(crate) fn binary_op_str(op: BinaryOp) -> &'static str {
    match op {
        BinaryOp::Add => "+",
        BinaryOp::Sub => "-",
        BinaryOp::Mul => "*",
        BinaryOp::Div => "/",
        BinaryOp::Mod => "%",
        BinaryOp::Pow => "^",
        BinaryOp::Eq => "==",
        BinaryOp::Ne => "!=",
        BinaryOp::Gt => ">",
        BinaryOp::Ge => ">=",
        BinaryOp::Lt => "<",
        BinaryOp::Le => "<=",
        BinaryOp::And => "and",
        BinaryOp::Or => "or",
        BinaryOp::Unless => "unless",
    }
}

/// Precedence of a binary operator (higher binds tighter).
pub(crate) fn binary_precedence(op: BinaryOp) -> u8 {
    match op {
        BinaryOp::Or => 1,
        BinaryOp::And | BinaryOp::Unless => 2,
        BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le => {
            3
        }
        BinaryOp::Add | BinaryOp::Sub => 4,
        BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod => 5,
        BinaryOp::Pow => 6,
    }
}

impl RangeOp {
    /// The function's name in LogQL.
    pub fn as_str(self) -> &'static str {
        match self {
            RangeOp::CountOverTime => "count_over_time",
            RangeOp::Rate => "rate",
            RangeOp::RateCounter => "rate_counter",
            RangeOp::BytesOverTime => "bytes_over_time",
            RangeOp::BytesRate => "bytes_rate",
            RangeOp::AvgOverTime => "avg_over_time",
            RangeOp::SumOverTime => "sum_over_time",
            RangeOp::MinOverTime => "min_over_time",
            RangeOp::MaxOverTime => "max_over_time",
            RangeOp::StdvarOverTime => "stdvar_over_time",
            RangeOp::StddevOverTime => "stddev_over_time",
            RangeOp::QuantileOverTime => "quantile_over_time",
            RangeOp::FirstOverTime => "first_over_time",
            RangeOp::LastOverTime => "last_over_time",
            RangeOp::AbsentOverTime => "absent_over_time",
        }
    }
}

fn range_op(name: &str) -> Option<RangeOp> {
    use RangeOp::*;
    [
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
    ]
    .into_iter()
    .find(|op| op.as_str() == name)
}

impl VectorOp {
    /// The aggregation's name in LogQL.
    pub fn as_str(self) -> &'static str {
        match self {
            VectorOp::Sum => "sum",
            VectorOp::Avg => "avg",
            VectorOp::Min => "min",
            VectorOp::Max => "max",
            VectorOp::Stddev => "stddev",
            VectorOp::Stdvar => "stdvar",
            VectorOp::Count => "count",
            VectorOp::Topk => "topk",
            VectorOp::Bottomk => "bottomk",
            VectorOp::Sort => "sort",
            VectorOp::SortDesc => "sort_desc",
            VectorOp::ApproxTopk => "approx_topk",
        }
    }
}

fn vector_op(name: &str) -> Option<VectorOp> {
    use VectorOp::*;
    [
        Sum, Avg, Min, Max, Stddev, Stdvar, Count, Topk, Bottomk, Sort, SortDesc, ApproxTopk,
    ]
    .into_iter()
    .find(|op| op.as_str() == name)
}

/// Parses a number literal as Go's `strconv.ParseFloat` would.
fn parse_float(text: &str) -> Result<f64, String> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '+' | '-'));
    match text.parse::<f64>() {
        Ok(value) if valid && value.is_finite() => Ok(value),
        Ok(_) if valid => Err(format!("{text:?}: value out of range")),
        _ => Err(format!(
            "{text:?} is not a decimal number such as 42, 0.5 or 1e3"
        )),
    }
}

fn regex_error_reason(err: &regex::Error) -> String {
    err.to_string()
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .trim_start_matches("error: ")
        .to_string()
}

/// Validates an `ip("...")` argument: an address, a CIDR or a range.
fn valid_ip_pattern(pattern: &str) -> bool {
    use std::net::IpAddr;
    if let Some((addr, bits)) = pattern.split_once('/') {
        let Ok(addr) = addr.trim().parse::<IpAddr>() else {
            return false;
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        return bits.trim().parse::<u8>().is_ok_and(|b| b <= max);
    }
    if let Some((from, to)) = pattern.split_once('-') {
        return match (from.trim().parse::<IpAddr>(), to.trim().parse::<IpAddr>()) {
            (Ok(a), Ok(b)) => a.is_ipv4() == b.is_ipv4() && a <= b,
            _ => false,
        };
    }
    pattern.trim().parse::<IpAddr>().is_ok()
}

/// Captures of a pattern (`<name>`, `<_>`), in order, with whether a
/// literal precedes each one.
fn pattern_captures(pattern: &str) -> Vec<(String, bool)> {
    let mut captures = Vec::new();
    let mut rest = pattern;
    let mut literal_before = false;
    while let Some(open) = rest.find('<') {
        if open > 0 {
            literal_before = true;
        }
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let is_capture = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && after[name_len..].starts_with('>');
        if is_capture {
            captures.push((name.to_string(), literal_before));
            literal_before = false;
            rest = &after[name_len + 1..];
        } else {
            literal_before = true;
            rest = after;
        }
    }
    captures
}

impl QueryParser<'_> {
    fn peek(&self) -> &Tok {
        &self.peek_token().tok
    }

    fn peek_token(&self) -> &Token {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[self.pos.min(last)]
    }

    fn peek_nth(&self, n: usize) -> &Tok {
        let last = self.tokens.len().saturating_sub(1);
        &self.tokens[(self.pos + n).min(last)].tok
    }

    fn start(&self) -> usize {
        self.peek_token().start
    }

    fn advance(&mut self) -> Token {
        let token = self.peek_token().clone();
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn error_at(&self, offset: usize, message: impl Into<String>) -> ParseError {
        ParseError::new(self.input, offset, message)
    }

    /// Loki's `syntax error: unexpected X, expecting A or B` (the expected
    /// list is left out when it would be longer than four, as yacc does).
    fn unexpected(&self, expected: &[&str]) -> ParseError {
        let mut message = format!("syntax error: unexpected {}", self.peek().describe());
        if !expected.is_empty() && expected.len() <= 4 {
            message.push_str(", expecting ");
            message.push_str(&expected.join(" or "));
        }
        self.error_at(self.start(), message)
    }

    fn expect(&mut self, tok: Tok, name: &str) -> Result<Token, ParseError> {
        if *self.peek() == tok {
            Ok(self.advance())
        } else {
            Err(self.unexpected(&[name]))
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Ident(name) => {
                self.advance();
                Ok(name)
            }
            _ => Err(self.unexpected(&["IDENTIFIER"])),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek().clone() {
            Tok::Str(value) => {
                self.advance();
                Ok(value)
            }
            _ => Err(self.unexpected(&["STRING"])),
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(
                self.start(),
                format!("query is nested too deeply (more than {MAX_DEPTH} levels): simplify it"),
            ));
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth = self.depth.saturating_sub(1);
    }

    fn count_binary(&mut self, at: usize) -> Result<(), ParseError> {
        self.binary_nodes += 1;
        if self.binary_nodes > MAX_BINARY_NODES {
            return Err(self.error_at(
                at,
                format!(
                    "query has too many binary operations or filter conditions (more than {MAX_BINARY_NODES}): simplify it"
                ),
            ));
        }
        Ok(())
    }

    fn matcher_error(&self, at: usize, err: MatcherError) -> ParseError {
        match err {
            MatcherError::Regex {
                name,
                value,
                reason,
            } => self.error_at(
                at,
                format!("error parsing regexp {value:?} for label {name:?}: {reason}"),
            ),
            other => self.error_at(at, other.to_string()),
        }
    }

    // ---- metric and top-level expressions ----

    fn expr(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        self.enter()?;
        let result = self.expr_inner(min_prec);
        self.leave();
        result
    }

    fn expr_inner(&mut self, min_prec: u8) -> Result<Node, ParseError> {
        let mut lhs = self.primary()?;
        while let Some((op, prec)) = binary_op(self.peek()) {
            if prec < min_prec {
                break;
            }
            let op_start = self.start();
            self.advance();
            let return_bool = if self.peek() == &Tok::Kw(Kw::Bool) {
                self.advance();
                true
            } else {
                false
            };
            let matching = self.vector_matching()?;
            let next_min = if op == BinaryOp::Pow { prec } else { prec + 1 };
            let rhs = self.expr(next_min)?;
            lhs = self.combine(lhs, rhs, op, op_start, return_bool, matching)?;
        }
        Ok(lhs)
    }

    #[inline(never)]
    fn combine(
        &mut self,
        lhs: Node,
        rhs: Node,
        op: BinaryOp,
        op_start: usize,
        return_bool: bool,
        matching: Option<VectorMatching>,
    ) -> Result<Node, ParseError> {
        self.count_binary(op_start)?;
        let symbol = binary_op_str(op);
        let lhs_metric = match lhs.kind {
            NodeKind::Metric(m) => m,
            NodeKind::Log(_) => {
                return Err(self.error_at(
                    lhs.start,
                    format!(
                        "unexpected type for left leg of binary operation ({symbol}): a log query cannot be an operand; use a metric query such as count_over_time({{...}}[5m])"
                    ),
                ));
            }
        };
        let rhs_metric = match rhs.kind {
            NodeKind::Metric(m) => m,
            NodeKind::Log(_) => {
                return Err(self.error_at(
                    rhs.start,
                    format!(
                        "unexpected type for right leg of binary operation ({symbol}): a log query cannot be an operand; use a metric query such as count_over_time({{...}}[5m])"
                    ),
                ));
            }
        };
        if matches!(op, BinaryOp::And | BinaryOp::Or | BinaryOp::Unless) {
            if let Some(v) = scalar_value(&lhs_metric) {
                return Err(self.error_at(
                    lhs.start,
                    format!(
                        "unexpected literal for left leg of logical/set binary operation ({symbol}): {v:.6}"
                    ),
                ));
            }
            if let Some(v) = scalar_value(&rhs_metric) {
                return Err(self.error_at(
                    rhs.start,
                    format!(
                        "unexpected literal for right leg of logical/set binary operation ({symbol}): {v:.6}"
                    ),
                ));
            }
        }
        Ok(Node {
            kind: NodeKind::Metric(MetricExpr::Binary(BinaryExpr {
                op,
                lhs: Box::new(lhs_metric),
                rhs: Box::new(rhs_metric),
                return_bool,
                matching,
            })),
            start: lhs.start,
        })
    }

    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(Tok::LParen, "(")?;
        let mut labels = Vec::new();
        if self.peek() == &Tok::RParen {
            self.advance();
            return Ok(labels);
        }
        loop {
            labels.push(self.ident()?);
            match self.peek() {
                Tok::Comma => {
                    self.advance();
                }
                Tok::RParen => {
                    self.advance();
                    return Ok(labels);
                }
                _ => return Err(self.unexpected(&[",", ")"])),
            }
        }
    }

    fn vector_matching(&mut self) -> Result<Option<VectorMatching>, ParseError> {
        let on = match self.peek() {
            Tok::Kw(Kw::On) => true,
            Tok::Kw(Kw::Ignoring) => false,
            _ => return Ok(None),
        };
        self.advance();
        let labels = self.label_list()?;
        let group = match self.peek() {
            Tok::Kw(Kw::GroupLeft) | Tok::Kw(Kw::GroupRight) => {
                let left = self.peek() == &Tok::Kw(Kw::GroupLeft);
                self.advance();
                let include = if self.peek() == &Tok::LParen {
                    self.label_list()?
                } else {
                    Vec::new()
                };
                Some(GroupModifier { left, include })
            }
            _ => None,
        };
        Ok(Some(VectorMatching { on, labels, group }))
    }

    /// Dispatches on the first token. The arms live in their own functions
    /// (never inlined) so that the frames on the recursion path stay small:
    /// debug builds on 2 MiB thread stacks must reach `MAX_DEPTH`.
    fn primary(&mut self) -> Result<Node, ParseError> {
        let start = self.start();
        let kind = match self.peek() {
            Tok::LBrace => return self.log_primary(start),
            Tok::LParen => return self.paren_primary(start),
            Tok::Number(_) | Tok::Add | Tok::Sub => self.literal_primary()?,
            Tok::Func(_) => self.function_primary(start)?,
            _ => return Err(self.unexpected(&[])),
        };
        Ok(Node {
            kind: NodeKind::Metric(kind),
            start,
        })
    }

    fn range_outside_aggregation(&self) -> ParseError {
        self.error_at(
            self.start(),
            "syntax error: unexpected RANGE: a log range such as [5m] is only allowed inside a range aggregation, e.g. count_over_time({app=\"x\"}[5m])",
        )
    }

    #[inline(never)]
    fn log_primary(&mut self, start: usize) -> Result<Node, ParseError> {
        let log = self.log_expr()?;
        if let Tok::Range(_) = self.peek() {
            return Err(self.range_outside_aggregation());
        }
        Ok(Node {
            kind: NodeKind::Log(log),
            start,
        })
    }

    #[inline(never)]
    fn paren_primary(&mut self, start: usize) -> Result<Node, ParseError> {
        self.advance();
        let inner = self.expr(0)?;
        if let Tok::Range(_) = self.peek() {
            return Err(self.range_outside_aggregation());
        }
        self.expect(Tok::RParen, ")")?;
        let kind = match inner.kind {
            NodeKind::Log(log) => NodeKind::Log(log),
            NodeKind::Metric(m) => NodeKind::Metric(MetricExpr::Paren(Box::new(m))),
        };
        Ok(Node { kind, start })
    }

    #[inline(never)]
    fn literal_primary(&mut self) -> Result<MetricExpr, ParseError> {
        let negative = self.peek() == &Tok::Sub;
        if matches!(self.peek(), Tok::Add | Tok::Sub) {
            self.advance();
            if !matches!(self.peek(), Tok::Number(_)) {
                return Err(self.unexpected(&["NUMBER"]));
            }
        }
        let value = self.number()?;
        Ok(MetricExpr::Literal(if negative { -value } else { value }))
    }

    #[inline(never)]
    fn function_primary(&mut self, start: usize) -> Result<MetricExpr, ParseError> {
        let Tok::Func(name) = *self.peek() else {
            return Err(self.unexpected(&[]));
        };
        if name == "vector" {
            self.advance();
            self.expect(Tok::LParen, "(")?;
            if !matches!(self.peek(), Tok::Number(_)) {
                return Err(self.unexpected(&["NUMBER"]));
            }
            let value = self
                .number_with(|reason| format!("unable to parse vectorExpr as a float: {reason}"))?;
            self.expect(Tok::RParen, ")")?;
            return Ok(MetricExpr::VectorLiteral(value));
        }
        let range = range_op(name);
        let vector = vector_op(name);
        if name != "label_replace" && range.is_none() && vector.is_none() {
            return Err(self.unexpected(&[]));
        }
        self.advance();
        self.enter()?;
        let result = match (range, vector) {
            (Some(op), _) => self.range_aggregation(op, start),
            (None, Some(op)) => self.vector_aggregation(op, start),
            (None, None) => self.label_replace(),
        };
        self.leave();
        result
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        self.number_with(|reason| format!("unable to parse literal as a float: {reason}"))
    }

    fn number_with(&mut self, message: impl Fn(String) -> String) -> Result<f64, ParseError> {
        let at = self.start();
        let Tok::Number(text) = self.peek().clone() else {
            return Err(self.unexpected(&["NUMBER"]));
        };
        self.advance();
        parse_float(&text).map_err(|reason| self.error_at(at, message(reason)))
    }

    fn metric_operand(&mut self) -> Result<MetricExpr, ParseError> {
        let node = self.expr(0)?;
        match node.kind {
            NodeKind::Metric(m) => Ok(m),
            NodeKind::Log(_) => Err(self.error_at(
                node.start,
                "expected a metric query, got a log query: wrap it in a range aggregation such as count_over_time({app=\"x\"}[5m])",
            )),
        }
    }

    fn label_replace(&mut self) -> Result<MetricExpr, ParseError> {
        self.expect(Tok::LParen, "(")?;
        let expr = self.metric_operand()?;
        let mut args = Vec::new();
        let mut regex_at = 0;
        for _ in 0..4 {
            self.expect(Tok::Comma, ",")?;
            regex_at = self.start();
            args.push(self.string()?);
        }
        self.expect(Tok::RParen, ")")?;
        let [dst, replacement, src, regex] = <[String; 4]>::try_from(args)
            .map_err(|_| self.error_at(regex_at, "label_replace takes 5 arguments"))?;
        if let Err(err) = regex::Regex::new(&format!("^(?s:{regex})$")) {
            return Err(self.error_at(
                regex_at,
                format!(
                    "invalid regex in label_replace: error parsing regexp: {}",
                    regex_error_reason(&err)
                ),
            ));
        }
        if !is_valid_label_name(&dst) {
            return Err(self.error_at(
                regex_at,
                format!("invalid destination label name in label_replace: {dst:?}"),
            ));
        }
        Ok(MetricExpr::LabelReplace {
            expr: Box::new(expr),
            dst,
            replacement,
            src,
            regex,
        })
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.peek() {
            Tok::Kw(Kw::By) => false,
            Tok::Kw(Kw::Without) => true,
            _ => return Ok(None),
        };
        self.advance();
        let labels = self.label_list()?;
        Ok(Some(Grouping { without, labels }))
    }

    fn range_aggregation(&mut self, op: RangeOp, start: usize) -> Result<MetricExpr, ParseError> {
        let name = op.as_str();
        self.expect(Tok::LParen, "(")?;
        let mut param = None;
        if let Tok::Number(text) = self.peek().clone() {
            let at = self.start();
            self.advance();
            self.expect(Tok::Comma, ",")?;
            if op != RangeOp::QuantileOverTime {
                return Err(self.error_at(
                    at,
                    format!("parameter {text} not supported for operation {name}"),
                ));
            }
            let value = parse_float(&text).map_err(|reason| {
                self.error_at(
                    at,
                    format!("invalid parameter for operation {name}: {reason}"),
                )
            })?;
            param = Some(value);
        } else if !matches!(self.peek(), Tok::LBrace | Tok::LParen) {
            return Err(self.unexpected(&["NUMBER", "{", "("]));
        }
        let range = self.log_range()?;
        self.expect(Tok::RParen, ")")?;
        let grouping = self.grouping()?;
        if op == RangeOp::QuantileOverTime && param.is_none() {
            return Err(self.error_at(start, format!("parameter required for operation {name}")));
        }
        if grouping.is_some()
            && !matches!(
                op,
                RangeOp::AvgOverTime
                    | RangeOp::StddevOverTime
                    | RangeOp::StdvarOverTime
                    | RangeOp::QuantileOverTime
                    | RangeOp::MaxOverTime
                    | RangeOp::MinOverTime
                    | RangeOp::FirstOverTime
                    | RangeOp::LastOverTime
            )
        {
            return Err(self.error_at(
                start,
                format!("grouping not allowed for {name} aggregation"),
            ));
        }
        if range.unwrap.is_some() {
            if matches!(
                op,
                RangeOp::CountOverTime | RangeOp::BytesOverTime | RangeOp::BytesRate
            ) {
                return Err(self.error_at(start, format!("invalid aggregation {name} with unwrap")));
            }
        } else if !matches!(
            op,
            RangeOp::BytesOverTime
                | RangeOp::BytesRate
                | RangeOp::CountOverTime
                | RangeOp::Rate
                | RangeOp::AbsentOverTime
        ) {
            return Err(self.error_at(start, format!("invalid aggregation {name} without unwrap")));
        }
        Ok(MetricExpr::Range(RangeAggregation {
            op,
            range,
            param,
            grouping,
        }))
    }

    fn vector_aggregation(&mut self, op: VectorOp, start: usize) -> Result<MetricExpr, ParseError> {
        let name = op.as_str();
        let mut grouping = self.grouping()?;
        self.expect(Tok::LParen, "(")?;
        let mut param_text = None;
        if let (Tok::Number(text), Tok::Comma) = (self.peek().clone(), self.peek_nth(1)) {
            self.advance();
            self.advance();
            param_text = Some(text);
        }
        let expr = self.metric_operand()?;
        self.expect(Tok::RParen, ")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        let param = match op {
            VectorOp::Topk | VectorOp::Bottomk | VectorOp::ApproxTopk => {
                let Some(text) = param_text else {
                    return Err(
                        self.error_at(start, format!("parameter required for operation {name}"))
                    );
                };
                let Ok(k) = text.parse::<i64>() else {
                    return Err(self.error_at(start, format!("invalid parameter {name}({text},")));
                };
                if k <= 0 {
                    return Err(self.error_at(
                        start,
                        format!("invalid parameter (must be greater than 0) {name}({text}"),
                    ));
                }
                if op == VectorOp::ApproxTopk && grouping.is_some() {
                    return Err(self.error_at(
                        start,
                        format!("grouping not allowed for {name} aggregation"),
                    ));
                }
                Some(k)
            }
            _ => {
                if let Some(text) = param_text {
                    return Err(self.error_at(
                        start,
                        format!("unsupported parameter for operation {name}({text},"),
                    ));
                }
                None
            }
        };
        if matches!(op, VectorOp::Sort | VectorOp::SortDesc)
            && grouping.as_ref().is_some_and(|g| !g.labels.is_empty())
        {
            return Err(self.error_at(start, "sort and sort_desc doesn't allow grouping by "));
        }
        Ok(MetricExpr::Vector(VectorAggregation {
            op,
            expr: Box::new(expr),
            param,
            grouping,
        }))
    }

    // ---- log ranges ----

    fn offset(&mut self) -> Result<Duration, ParseError> {
        if self.peek() != &Tok::Kw(Kw::Offset) {
            return Ok(Duration::ZERO);
        }
        self.advance();
        let at = self.start();
        match self.peek().clone() {
            Tok::Duration { value, negative } => {
                self.advance();
                if negative {
                    return Err(self.error_at(at, "negative offsets are not supported"));
                }
                Ok(value)
            }
            _ => Err(self.unexpected(&["DURATION"])),
        }
    }

    fn range(&mut self) -> Result<Duration, ParseError> {
        match self.peek().clone() {
            Tok::Range(d) => {
                self.advance();
                Ok(d)
            }
            _ => Err(self.unexpected(&["RANGE"])),
        }
    }

    fn log_range(&mut self) -> Result<LogRange, ParseError> {
        if self.peek() != &Tok::LParen {
            return self.log_range_from_selector();
        }
        self.advance();
        self.enter()?;
        let inner = if self.peek() == &Tok::LParen {
            self.log_range().map(|r| (Some(r), None))
        } else {
            self.log_range_or_partial()
        };
        self.leave();
        let inner = inner?;
        self.expect(Tok::RParen, ")")?;
        match inner {
            (Some(range), _) => Ok(range),
            (None, Some((log, mut unwrap))) => {
                let range = self.range()?;
                let offset = self.offset()?;
                // `({app="x"})[5m] | unwrap v`: Loki allows an unwrap (only)
                // after the range of a parenthesised bare selector.
                if log.stages.is_empty()
                    && unwrap.is_none()
                    && self.peek() == &Tok::Pipe
                    && self.peek_nth(1) == &Tok::Kw(Kw::Unwrap)
                {
                    self.advance();
                    unwrap = Some(self.unwrap()?);
                }
                Ok(LogRange {
                    log,
                    range,
                    unwrap,
                    offset,
                })
            }
            (None, None) => Err(self.unexpected(&[])),
        }
    }

    /// Inside parentheses: a whole log range, or a selector with pipeline
    /// and unwrap whose range follows the closing parenthesis.
    #[allow(clippy::type_complexity)]
    fn log_range_or_partial(
        &mut self,
    ) -> Result<(Option<LogRange>, Option<(LogExpr, Option<Unwrap>)>), ParseError> {
        let matchers = self.selector()?;
        if let Tok::Range(_) = self.peek() {
            let range = self.range()?;
            let offset = self.offset()?;
            let (stages, unwrap) = self.pipeline(true)?;
            return Ok((
                Some(LogRange {
                    log: LogExpr { matchers, stages },
                    range,
                    unwrap,
                    offset,
                }),
                None,
            ));
        }
        let (stages, unwrap) = self.pipeline(true)?;
        let log = LogExpr { matchers, stages };
        if let Tok::Range(_) = self.peek() {
            let range = self.range()?;
            let offset = self.offset()?;
            return Ok((
                Some(LogRange {
                    log,
                    range,
                    unwrap,
                    offset,
                }),
                None,
            ));
        }
        Ok((None, Some((log, unwrap))))
    }

    fn log_range_from_selector(&mut self) -> Result<LogRange, ParseError> {
        if self.peek() != &Tok::LBrace {
            return Err(self.unexpected(&["{", "("]));
        }
        match self.log_range_or_partial()? {
            (Some(range), _) => Ok(range),
            _ => Err(self.unexpected(&["RANGE"])),
        }
    }

    // ---- log queries ----

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let matchers = self.selector()?;
        let (stages, _) = self.pipeline(false)?;
        Ok(LogExpr { matchers, stages })
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        let open = self.expect(Tok::LBrace, "{")?.start;
        let mut matchers = Vec::new();
        if self.peek() != &Tok::RBrace {
            loop {
                matchers.push(self.matcher()?);
                match self.peek() {
                    Tok::Comma => {
                        self.advance();
                    }
                    Tok::RBrace => break,
                    _ => return Err(self.unexpected(&[",", "}"])),
                }
            }
        }
        self.advance();
        if matchers.iter().all(Matcher::matches_empty) {
            return Err(self.error_at(open, ERR_EMPTY_SELECTOR));
        }
        Ok(matchers)
    }

    fn match_op(&self) -> Option<MatchOp> {
        Some(match self.peek() {
            Tok::Eq => MatchOp::Equal,
            Tok::Neq => MatchOp::NotEqual,
            Tok::Re => MatchOp::Regex,
            Tok::Nre => MatchOp::NotRegex,
            _ => return None,
        })
    }

    /// `name op "value"`.
    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let name = self.ident()?;
        let Some(op) = self.match_op() else {
            return Err(self.unexpected(&["=", "!=", "=~", "!~"]));
        };
        self.advance();
        let at = self.start();
        let value = self.string()?;
        Matcher::new(op, name, value).map_err(|err| self.matcher_error(at, err))
    }

    /// Pipeline stages; with `allow_unwrap`, an `| unwrap ...` ends the
    /// pipeline and only label filters may follow it.
    fn pipeline(&mut self, allow_unwrap: bool) -> Result<(Vec<Stage>, Option<Unwrap>), ParseError> {
        let mut stages = Vec::new();
        loop {
            let op = match self.peek() {
                Tok::PipeExact => LineFilterOp::Contains,
                Tok::Neq => LineFilterOp::NotContains,
                Tok::PipeMatch => LineFilterOp::Regex,
                Tok::Nre => LineFilterOp::NotRegex,
                Tok::PipePattern => LineFilterOp::Pattern,
                Tok::Npa => LineFilterOp::NotPattern,
                Tok::Pipe => {
                    self.advance();
                    if self.peek() == &Tok::Kw(Kw::Unwrap) {
                        if !allow_unwrap {
                            return Err(self.error_at(
                                self.start(),
                                "syntax error: unexpected unwrap: unwrap is only allowed inside a range aggregation, e.g. sum_over_time({app=\"x\"} | unwrap bytes [5m])",
                            ));
                        }
                        let unwrap = self.unwrap()?;
                        return Ok((stages, Some(unwrap)));
                    }
                    stages.push(self.stage()?);
                    continue;
                }
                _ => return Ok((stages, None)),
            };
            self.advance();
            stages.push(Stage::LineFilter(self.line_filter(op)?));
        }
    }

    fn line_filter_value(&mut self, op: LineFilterOp) -> Result<LineFilterValue, ParseError> {
        let at = self.start();
        match self.peek().clone() {
            Tok::Str(value) => {
                self.advance();
                match op {
                    LineFilterOp::Regex | LineFilterOp::NotRegex => {
                        if let Err(err) = regex::Regex::new(&value) {
                            return Err(self.error_at(
                                at,
                                format!(
                                    "error parsing regexp {value:?}: {}",
                                    regex_error_reason(&err)
                                ),
                            ));
                        }
                    }
                    LineFilterOp::Pattern | LineFilterOp::NotPattern
                        if pattern_captures(&value).iter().any(|(name, _)| name != "_") =>
                    {
                        return Err(self.error_at(
                            at,
                            format!(
                                "invalid line filter pattern {value:?}: named captures are not allowed, use <_>"
                            ),
                        ));
                    }
                    _ => {}
                }
                Ok(LineFilterValue::Text(value))
            }
            Tok::Func("ip") => {
                self.advance();
                self.expect(Tok::LParen, "(")?;
                let pattern_at = self.start();
                let pattern = self.string()?;
                self.expect(Tok::RParen, ")")?;
                if !matches!(op, LineFilterOp::Contains | LineFilterOp::NotContains) {
                    return Err(self.error_at(
                        at,
                        "ip: invalid operation: ip() line filters only work with |= and !=",
                    ));
                }
                if !valid_ip_pattern(&pattern) {
                    return Err(self.error_at(pattern_at, ip_pattern_error(&pattern)));
                }
                Ok(LineFilterValue::Ip(pattern))
            }
            _ => Err(self.unexpected(&["STRING", "ip"])),
        }
    }

    fn line_filter(&mut self, op: LineFilterOp) -> Result<LineFilter, ParseError> {
        let mut values = vec![self.line_filter_value(op)?];
        while self.peek() == &Tok::Kw(Kw::Or)
            && matches!(self.peek_nth(1), Tok::Str(_) | Tok::Func("ip"))
        {
            let at = self.start();
            self.advance();
            self.count_binary(at)?;
            values.push(self.line_filter_value(op)?);
        }
        Ok(LineFilter { op, values })
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let at = self.start();
        match self.peek().clone() {
            Tok::Kw(Kw::Json) => {
                self.advance();
                Ok(Stage::Parser(Parser::Json {
                    expressions: self.extraction_expressions()?,
                }))
            }
            Tok::Kw(Kw::Logfmt) => {
                self.advance();
                let (mut strict, mut keep_empty) = (false, false);
                while let Tok::Flag(flag) = self.peek().clone() {
                    self.advance();
                    if flag == "--strict" {
                        strict = true;
                    } else {
                        keep_empty = true;
                    }
                }
                Ok(Stage::Parser(Parser::Logfmt {
                    strict,
                    keep_empty,
                    expressions: self.extraction_expressions()?,
                }))
            }
            Tok::Kw(Kw::Regexp) => {
                self.advance();
                let at = self.start();
                let source = self.string()?;
                self.validate_regexp_parser(at, &source)?;
                Ok(Stage::Parser(Parser::Regexp(source)))
            }
            Tok::Kw(Kw::Pattern) => {
                self.advance();
                let at = self.start();
                let source = self.string()?;
                self.validate_pattern_parser(at, &source)?;
                Ok(Stage::Parser(Parser::Pattern(source)))
            }
            Tok::Kw(Kw::Unpack) => {
                self.advance();
                Ok(Stage::Parser(Parser::Unpack))
            }
            Tok::Kw(Kw::Decolorize) => {
                self.advance();
                Ok(Stage::Decolorize)
            }
            Tok::Kw(Kw::LineFormat) => {
                self.advance();
                Ok(Stage::LineFormat(self.string()?))
            }
            Tok::Kw(Kw::LabelFormat) => {
                self.advance();
                let mut ops = Vec::new();
                loop {
                    let dst = self.ident()?;
                    self.expect(Tok::Eq, "=")?;
                    match self.peek().clone() {
                        Tok::Ident(src) => {
                            self.advance();
                            ops.push(LabelFormatOp::Rename { dst, src });
                        }
                        Tok::Str(template) => {
                            self.advance();
                            ops.push(LabelFormatOp::Template { dst, template });
                        }
                        _ => return Err(self.unexpected(&["IDENTIFIER", "STRING"])),
                    }
                    if self.peek() != &Tok::Comma {
                        return Ok(Stage::LabelFormat(ops));
                    }
                    self.advance();
                }
            }
            Tok::Kw(kw @ (Kw::Drop | Kw::Keep)) => {
                self.advance();
                let mut selectors = Vec::new();
                loop {
                    if self.match_op_follows() {
                        selectors.push(LabelSelector::Matcher(self.matcher()?));
                    } else {
                        selectors.push(LabelSelector::Name(self.ident()?));
                    }
                    if self.peek() != &Tok::Comma {
                        break;
                    }
                    self.advance();
                }
                Ok(if kw == Kw::Drop {
                    Stage::Drop(selectors)
                } else {
                    Stage::Keep(selectors)
                })
            }
            Tok::Ident(_) | Tok::LParen => Ok(Stage::LabelFilter(self.label_filter(0)?)),
            _ => {
                let _ = at;
                Err(self.unexpected(&[]))
            }
        }
    }

    fn match_op_follows(&self) -> bool {
        matches!(self.peek(), Tok::Ident(_))
            && matches!(self.peek_nth(1), Tok::Eq | Tok::Neq | Tok::Re | Tok::Nre)
    }

    fn extraction_expressions(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        let mut expressions = Vec::new();
        if !matches!(self.peek(), Tok::Ident(_)) {
            return Ok(expressions);
        }
        loop {
            let label = self.ident()?;
            let expression = if self.peek() == &Tok::Eq {
                self.advance();
                self.string()?
            } else {
                label.clone()
            };
            expressions.push((label, expression));
            if self.peek() != &Tok::Comma {
                return Ok(expressions);
            }
            self.advance();
        }
    }

    fn validate_regexp_parser(&self, at: usize, source: &str) -> Result<(), ParseError> {
        let re = regex::Regex::new(source).map_err(|err| {
            let reason = regex_error_reason(&err);
            let message = if reason.contains("duplicate capture group name") {
                format!("invalid regexp parser {source:?}: duplicate extracted label name")
            } else {
                format!("invalid regexp parser: error parsing regexp {source:?}: {reason}")
            };
            self.error_at(at, message)
        })?;
        let mut named = 0;
        for name in re.capture_names().flatten() {
            if !is_valid_label_name(name) {
                return Err(self.error_at(
                    at,
                    format!("invalid regexp parser: invalid extracted label name {name:?}"),
                ));
            }
            named += 1;
        }
        if named == 0 {
            return Err(self.error_at(
                at,
                format!(
                    "invalid regexp parser {source:?}: at least one named capture must be supplied, e.g. (?P<status>\\d+)"
                ),
            ));
        }
        Ok(())
    }

    fn validate_pattern_parser(&self, at: usize, source: &str) -> Result<(), ParseError> {
        let captures = pattern_captures(source);
        if captures.iter().all(|(name, _)| name == "_") {
            return Err(self.error_at(
                at,
                format!(
                    "invalid pattern parser {source:?}: at least one capture is required, e.g. <ip> - <_>"
                ),
            ));
        }
        for (i, (name, literal_before)) in captures.iter().enumerate() {
            if i > 0 && !literal_before {
                return Err(self.error_at(
                    at,
                    format!(
                        "invalid pattern parser {source:?}: consecutive capture not allowed: put literal text between <{}> and <{name}>",
                        captures[i - 1].0
                    ),
                ));
            }
            if name != "_" && captures[..i].iter().any(|(n, _)| n == name) {
                return Err(self.error_at(
                    at,
                    format!("invalid pattern parser {source:?}: duplicate capture <{name}>"),
                ));
            }
        }
        Ok(())
    }

    fn unwrap(&mut self) -> Result<Unwrap, ParseError> {
        self.advance(); // unwrap
        let conversion = match self.peek() {
            Tok::Func("bytes") => Some(UnwrapConversion::Bytes),
            Tok::Func("duration") => Some(UnwrapConversion::Duration),
            Tok::Func("duration_seconds") => Some(UnwrapConversion::DurationSeconds),
            Tok::Ident(_) => None,
            _ => {
                return Err(self.unexpected(&[
                    "IDENTIFIER",
                    "BYTES_CONV",
                    "DURATION_CONV",
                    "DURATION_SECONDS_CONV",
                ]));
            }
        };
        let label = if conversion.is_some() {
            self.advance();
            self.expect(Tok::LParen, "(")?;
            let label = self.ident()?;
            self.expect(Tok::RParen, ")")?;
            label
        } else {
            self.ident()?
        };
        let mut post_filters = Vec::new();
        while self.peek() == &Tok::Pipe {
            self.advance();
            if !matches!(self.peek(), Tok::Ident(_) | Tok::LParen) {
                return Err(self.error_at(
                    self.start(),
                    format!(
                        "syntax error: unexpected {}, expecting IDENTIFIER or (: only label filters may follow unwrap",
                        self.peek().describe()
                    ),
                ));
            }
            post_filters.push(self.label_filter(0)?);
        }
        Ok(Unwrap {
            label,
            conversion,
            post_filters,
        })
    }

    // ---- label filters ----

    /// Label filter expressions with Loki's precedence: `or` < `and`, and a
    /// `,` or juxtaposition takes everything to its right as its operand.
    fn label_filter(&mut self, min_prec: u8) -> Result<LabelFilter, ParseError> {
        self.enter()?;
        let result = self.label_filter_inner(min_prec);
        self.leave();
        result
    }

    fn label_filter_inner(&mut self, mut min_prec: u8) -> Result<LabelFilter, ParseError> {
        // Left operands of `,`/juxtaposition: each takes the rest of the
        // expression as its right operand, so they fold from the right at
        // the end (without recursing once per item).
        let mut pending = Vec::new();
        let mut lhs = self.label_filter_primary()?;
        loop {
            let at = self.start();
            match self.peek() {
                Tok::Comma | Tok::Ident(_) | Tok::LParen => {
                    if self.peek() == &Tok::Comma {
                        self.advance();
                    }
                    self.count_binary(at)?;
                    pending.push(lhs);
                    min_prec = 0;
                    lhs = self.label_filter_primary()?;
                }
                Tok::Kw(Kw::Or) if min_prec <= 1 => {
                    self.advance();
                    self.count_binary(at)?;
                    let rhs = self.label_filter(2)?;
                    lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
                }
                Tok::Kw(Kw::And) if min_prec <= 2 => {
                    self.advance();
                    self.count_binary(at)?;
                    let rhs = self.label_filter(3)?;
                    lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
                }
                _ => break,
            }
        }
        while let Some(left) = pending.pop() {
            lhs = LabelFilter::And(Box::new(left), Box::new(lhs));
        }
        Ok(lhs)
    }

    fn label_filter_primary(&mut self) -> Result<LabelFilter, ParseError> {
        if self.peek() == &Tok::LParen {
            self.advance();
            let inner = self.label_filter(0)?;
            self.expect(Tok::RParen, ")")?;
            return Ok(inner);
        }
        self.label_filter_comparison()
    }

    #[inline(never)]
    fn label_filter_comparison(&mut self) -> Result<LabelFilter, ParseError> {
        let name_at = self.start();
        let name = match self.peek().clone() {
            Tok::Ident(name) => {
                self.advance();
                name
            }
            _ => return Err(self.unexpected(&["IDENTIFIER", "("])),
        };
        let op_tok = self.peek().clone();
        let cmp = match op_tok {
            Tok::Eq | Tok::CmpEq => CmpOp::Eq,
            Tok::Neq => CmpOp::Ne,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Re | Tok::Nre => {
                let op = if op_tok == Tok::Re {
                    MatchOp::Regex
                } else {
                    MatchOp::NotRegex
                };
                self.advance();
                let at = self.start();
                let value = self.string()?;
                return Matcher::new(op, name, value)
                    .map(LabelFilter::String)
                    .map_err(|err| self.matcher_error(at, err));
            }
            _ => {
                let _ = name_at;
                return Err(self.unexpected(&[]));
            }
        };
        self.advance();
        let value_at = self.start();
        match self.peek().clone() {
            Tok::Str(value) if matches!(op_tok, Tok::Eq | Tok::Neq) => {
                self.advance();
                let op = if op_tok == Tok::Eq {
                    MatchOp::Equal
                } else {
                    MatchOp::NotEqual
                };
                Matcher::new(op, name, value)
                    .map(LabelFilter::String)
                    .map_err(|err| self.matcher_error(value_at, err))
            }
            Tok::Func("ip") if matches!(op_tok, Tok::Eq | Tok::Neq) => {
                self.advance();
                self.expect(Tok::LParen, "(")?;
                let pattern_at = self.start();
                let cidr = self.string()?;
                self.expect(Tok::RParen, ")")?;
                if !valid_ip_pattern(&cidr) {
                    return Err(self.error_at(pattern_at, ip_pattern_error(&cidr)));
                }
                Ok(LabelFilter::Ip {
                    name,
                    op: cmp,
                    cidr,
                })
            }
            Tok::Duration { value, negative } => {
                self.advance();
                if negative {
                    return Err(self.error_at(
                        value_at,
                        "negative durations are not supported in label filters",
                    ));
                }
                Ok(LabelFilter::Duration {
                    name,
                    op: cmp,
                    value,
                })
            }
            Tok::Bytes(value) => {
                self.advance();
                Ok(LabelFilter::Bytes {
                    name,
                    op: cmp,
                    value,
                })
            }
            Tok::Number(_) => Ok(LabelFilter::Number {
                name,
                op: cmp,
                value: self.number()?,
            }),
            Tok::Add | Tok::Sub => {
                let negative = self.peek() == &Tok::Sub;
                self.advance();
                if !matches!(self.peek(), Tok::Number(_)) {
                    return Err(self.unexpected(&["NUMBER"]));
                }
                let value = self.number()?;
                Ok(LabelFilter::Number {
                    name,
                    op: cmp,
                    value: if negative { -value } else { value },
                })
            }
            _ => {
                if matches!(op_tok, Tok::Eq | Tok::Neq) {
                    Err(self.unexpected(&[]))
                } else {
                    Err(self.unexpected(&["NUMBER", "DURATION", "BYTES", "+"]))
                }
            }
        }
    }
}

fn ip_pattern_error(pattern: &str) -> String {
    format!(
        "ip: invalid pattern {pattern:?}: use an address (10.0.0.1), a CIDR (10.0.0.0/8) or a range (10.0.0.1-10.0.0.9)"
    )
}

/// The value of an expression made only of number literals.
fn scalar_value(expr: &MetricExpr) -> Option<f64> {
    match expr {
        MetricExpr::Literal(v) => Some(*v),
        MetricExpr::Paren(inner) => scalar_value(inner),
        MetricExpr::Binary(b) => {
            let (l, r) = (scalar_value(&b.lhs)?, scalar_value(&b.rhs)?);
            Some(match b.op {
                BinaryOp::Add => l + r,
                BinaryOp::Sub => l - r,
                BinaryOp::Mul => l * r,
                BinaryOp::Div => l / r,
                BinaryOp::Mod => l % r,
                BinaryOp::Pow => l.powf(r),
                _ => return None,
            })
        }
        _ => None,
    }
}
