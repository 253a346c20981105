//! Printing queries: a compact single-line `Display` for every node, and
//! [`format_query`], the indented form Loki's `format_query` endpoint
//! returns. Both re-parse to the same syntax tree.

use std::fmt::{self, Display, Formatter, Write};
use std::time::Duration;

use lucia_common::duration::format_prometheus_duration;
use lucia_common::labels::write_quoted;
use lucia_common::matchers::Matcher;

use crate::ast::*;
use crate::parser::{binary_op_str, binary_precedence};

/// Lines longer than this are broken up by [`format_query`].
const MAX_LINE: usize = 100;
const INDENT: &str = "  ";

/// A duration as LogQL reads it back: Prometheus units when whole
/// milliseconds (`1h30m`, `250ms`), nanoseconds otherwise.
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        format_prometheus_duration(d)
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// A byte count as LogQL reads it back (`1MiB`, `20KB`, `1234B`).
pub fn format_bytes(n: u64) -> String {
    if n == 0 {
        return "0B".into();
    }
    for (unit, size) in [
        ("PiB", 1u64 << 50),
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if n.is_multiple_of(size) {
            let decimal = [
                ("PB", 1000u64.pow(5)),
                ("TB", 1000u64.pow(4)),
                ("GB", 1000u64.pow(3)),
                ("MB", 1000u64.pow(2)),
                ("KB", 1000),
            ]
            .into_iter()
            .find(|(_, s)| n.is_multiple_of(*s));
            // Prefer whichever unit gives the shorter number.
            if let Some((dunit, dsize)) = decimal
                && dsize > size
            {
                return format!("{}{dunit}", n / dsize);
            }
            return format!("{}{unit}", n / size);
        }
    }
    for (unit, size) in [
        ("PB", 1000u64.pow(5)),
        ("TB", 1000u64.pow(4)),
        ("GB", 1000u64.pow(3)),
        ("MB", 1000u64.pow(2)),
        ("KB", 1000),
    ] {
        if n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n}B")
}

/// A number literal that LogQL reads back as the same `f64`.
pub fn format_number(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() > 21 {
        format!("{v:e}")
    } else {
        plain
    }
}

fn quoted(s: &str) -> String {
    let mut out = String::new();
    let _ = write_quoted(&mut out, s);
    out
}

fn write_selector(f: &mut impl Write, matchers: &[Matcher]) -> fmt::Result {
    f.write_char('{')?;
    for (i, m) in matchers.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{m}")?;
    }
    f.write_char('}')
}

fn write_labels(f: &mut impl Write, labels: &[String]) -> fmt::Result {
    write!(f, "({})", labels.join(", "))
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Log(log) => log.fmt(f),
            Self::Metric(metric) => metric.fmt(f),
        }
    }
}

impl Display for LogExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write_selector(f, &self.matchers)?;
        for stage in &self.stages {
            write!(f, " {stage}")?;
        }
        Ok(())
    }
}

impl LineFilterOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contains => "|=",
            Self::NotContains => "!=",
            Self::Regex => "|~",
            Self::NotRegex => "!~",
            Self::Pattern => "|>",
            Self::NotPattern => "!>",
        }
    }
}

impl Display for LineFilterValue {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(text) => write_quoted(f, text),
            Self::Ip(cidr) => {
                f.write_str("ip(")?;
                write_quoted(f, cidr)?;
                f.write_char(')')
            }
        }
    }
}

impl Display for LineFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.op.as_str())?;
        for (i, value) in self.values.iter().enumerate() {
            if i > 0 {
                f.write_str(" or")?;
            }
            write!(f, " {value}")?;
        }
        Ok(())
    }
}

fn write_expressions(f: &mut Formatter<'_>, expressions: &[(String, String)]) -> fmt::Result {
    for (i, (label, expression)) in expressions.iter().enumerate() {
        f.write_str(if i == 0 { " " } else { ", " })?;
        f.write_str(label)?;
        if label != expression {
            f.write_char('=')?;
            write_quoted(f, expression)?;
        }
    }
    Ok(())
}

impl Display for Parser {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Json { expressions } => {
                f.write_str("json")?;
                write_expressions(f, expressions)
            }
            Self::Logfmt {
                strict,
                keep_empty,
                expressions,
            } => {
                f.write_str("logfmt")?;
                if *strict {
                    f.write_str(" --strict")?;
                }
                if *keep_empty {
                    f.write_str(" --keep-empty")?;
                }
                write_expressions(f, expressions)
            }
            Self::Regexp(re) => write!(f, "regexp {}", quoted(re)),
            Self::Pattern(p) => write!(f, "pattern {}", quoted(p)),
            Self::Unpack => f.write_str("unpack"),
        }
    }
}

impl CmpOp {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "==",
            Self::Ne => "!=",
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
        }
    }
}

impl LabelFilter {
    /// Whether `Display` prints this with a `,` that is not inside
    /// parentheses: the comma would swallow anything printed after it.
    fn open_right(&self) -> bool {
        match self {
            Self::And(l, r) => {
                matches!(**r, Self::And(..)) && !matches!(**l, Self::And(..) | Self::Or(..))
            }
            Self::Or(_, r) => !matches!(**r, Self::Or(..)) && r.open_right(),
            _ => false,
        }
    }
}

impl Display for LabelFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let paren = |f: &mut Formatter<'_>, inner: &LabelFilter, wrap: bool| {
            if wrap {
                write!(f, "({inner})")
            } else {
                write!(f, "{inner}")
            }
        };
        match self {
            // `and` and `or` are left-associative and `and` binds tighter;
            // a `,` takes everything to its right, which prints right-nested
            // chains (`a, b, c`) without parentheses.
            Self::And(l, r) => {
                let l_compound = matches!(**l, Self::Or(..) | Self::And(..));
                match **r {
                    Self::And(..) if !l_compound => {
                        write!(f, "{l}, ")?;
                        paren(f, r, false)
                    }
                    Self::And(..) | Self::Or(..) => {
                        paren(f, l, l_compound)?;
                        f.write_str(" and ")?;
                        paren(f, r, true)
                    }
                    _ => {
                        paren(f, l, matches!(**l, Self::Or(..)) || l.open_right())?;
                        f.write_str(" and ")?;
                        paren(f, r, false)
                    }
                }
            }
            Self::Or(l, r) => {
                paren(f, l, l.open_right())?;
                f.write_str(" or ")?;
                paren(f, r, matches!(**r, Self::Or(..)))
            }
            Self::String(m) => write!(f, "{m}"),
            Self::Number { name, op, value } => {
                write!(f, "{name} {} {}", op.as_str(), format_number(*value))
            }
            Self::Duration { name, op, value } => {
                write!(f, "{name} {} {}", op.as_str(), format_duration(*value))
            }
            Self::Bytes { name, op, value } => {
                write!(f, "{name} {} {}", op.as_str(), format_bytes(*value))
            }
            Self::Ip { name, op, cidr } => {
                let op = if *op == CmpOp::Ne { "!=" } else { "=" };
                write!(f, "{name}{op}ip({})", quoted(cidr))
            }
        }
    }
}

impl Display for LabelFormatOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rename { dst, src } => write!(f, "{dst}={src}"),
            Self::Template { dst, template } => write!(f, "{dst}={}", quoted(template)),
        }
    }
}

impl Display for LabelSelector {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(name) => f.write_str(name),
            Self::Matcher(m) => write!(f, "{m}"),
        }
    }
}

fn join<T: Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Display for Stage {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::LineFilter(lf) => write!(f, "{lf}"),
            Self::Parser(p) => write!(f, "| {p}"),
            Self::LabelFilter(lf) => write!(f, "| {lf}"),
            Self::LineFormat(t) => write!(f, "| line_format {}", quoted(t)),
            Self::LabelFormat(ops) => write!(f, "| label_format {}", join(ops)),
            Self::Decolorize => f.write_str("| decolorize"),
            Self::Drop(s) => write!(f, "| drop {}", join(s)),
            Self::Keep(s) => write!(f, "| keep {}", join(s)),
        }
    }
}

impl Display for Unwrap {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str("| unwrap ")?;
        match self.conversion {
            None => f.write_str(&self.label)?,
            Some(UnwrapConversion::Bytes) => write!(f, "bytes({})", self.label)?,
            Some(UnwrapConversion::Duration) => write!(f, "duration({})", self.label)?,
            Some(UnwrapConversion::DurationSeconds) => {
                write!(f, "duration_seconds({})", self.label)?
            }
        }
        for filter in &self.post_filters {
            write!(f, " | {filter}")?;
        }
        Ok(())
    }
}

impl Display for LogRange {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.log)?;
        if let Some(unwrap) = &self.unwrap {
            write!(f, " {unwrap}")?;
        }
        if !self.log.stages.is_empty() || self.unwrap.is_some() {
            f.write_char(' ')?;
        }
        write!(f, "[{}]", format_prometheus_duration(self.range))?;
        if !self.offset.is_zero() {
            write!(f, " offset {}", format_duration(self.offset))?;
        }
        Ok(())
    }
}

impl Display for RangeOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Display for VectorOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Display for BinaryOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(binary_op_str(*self))
    }
}

impl Display for Grouping {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(if self.without { "without " } else { "by " })?;
        write_labels(f, &self.labels)
    }
}

/// The operator with its `bool`, `on`/`ignoring` and `group_*` modifiers.
fn binary_operator(b: &BinaryExpr) -> String {
    let mut out = binary_op_str(b.op).to_string();
    if b.return_bool {
        out.push_str(" bool");
    }
    if let Some(m) = &b.matching {
        out.push_str(if m.on { " on" } else { " ignoring" });
        let _ = write_labels(&mut out, &m.labels);
        if let Some(g) = &m.group {
            out.push_str(if g.left {
                " group_left"
            } else {
                " group_right"
            });
            if !g.include.is_empty() {
                let _ = write_labels(&mut out, &g.include);
            }
        }
    }
    out
}

/// Whether an operand must be parenthesised to keep the tree's shape
/// (trees from the parser carry their parentheses already).
fn needs_paren(operand: &MetricExpr, parent: BinaryOp, right: bool) -> bool {
    let MetricExpr::Binary(child) = operand else {
        return false;
    };
    let (p, c) = (binary_precedence(parent), binary_precedence(child.op));
    if c != p {
        return c < p;
    }
    // Equal precedence: `^` groups to the right, the rest to the left.
    if parent == BinaryOp::Pow {
        !right
    } else {
        right
    }
}

fn operand(expr: &MetricExpr, parent: BinaryOp, right: bool) -> String {
    if needs_paren(expr, parent, right) {
        format!("({expr})")
    } else {
        expr.to_string()
    }
}

impl Display for MetricExpr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Self::Range(r) => {
                write!(f, "{}(", r.op)?;
                if let Some(p) = r.param {
                    write!(f, "{}, ", format_number(p))?;
                }
                write!(f, "{})", r.range)?;
                if let Some(g) = &r.grouping {
                    write!(f, " {g}")?;
                }
                Ok(())
            }
            Self::Vector(v) => {
                write!(f, "{}", v.op)?;
                if let Some(g) = &v.grouping {
                    write!(f, " {g} ")?;
                }
                f.write_char('(')?;
                if let Some(k) = v.param {
                    write!(f, "{k}, ")?;
                }
                write!(f, "{})", v.expr)
            }
            Self::Binary(b) => write!(
                f,
                "{} {} {}",
                operand(&b.lhs, b.op, false),
                binary_operator(b),
                operand(&b.rhs, b.op, true)
            ),
            Self::Literal(v) => f.write_str(&format_number(*v)),
            Self::VectorLiteral(v) => write!(f, "vector({})", format_number(*v)),
            Self::LabelReplace {
                expr,
                dst,
                replacement,
                src,
                regex,
            } => write!(
                f,
                "label_replace({expr}, {}, {}, {}, {})",
                quoted(dst),
                quoted(replacement),
                quoted(src),
                quoted(regex)
            ),
            Self::Paren(inner) => write!(f, "({inner})"),
        }
    }
}

/// The canonical, indented form of a query (what Loki's `format_query`
/// endpoint returns): one line when it fits in 100 characters, otherwise
/// broken at pipeline stages, aggregations and binary operators.
pub fn format_query(expr: &Expr) -> String {
    let mut out = String::new();
    match expr {
        Expr::Log(log) => pretty_log(&mut out, log, None, 0),
        Expr::Metric(metric) => pretty_metric(&mut out, metric, 0),
    }
    out
}

fn pad(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str(INDENT);
    }
}

fn fits(text: &str, level: usize) -> bool {
    level * INDENT.len() + text.len() <= MAX_LINE
}

/// Writes a log expression (and the rest of a log range) starting at the
/// current position, which is already indented to `level`.
fn pretty_log(out: &mut String, log: &LogExpr, range: Option<&LogRange>, level: usize) {
    let line = match range {
        Some(r) => r.to_string(),
        None => log.to_string(),
    };
    if fits(&line, level) {
        out.push_str(&line);
        return;
    }
    let _ = write_selector(out, &log.matchers);
    let mut lines: Vec<String> = log.stages.iter().map(ToString::to_string).collect();
    if let Some(r) = range {
        if let Some(u) = &r.unwrap {
            lines.push(u.to_string());
        }
        let mut tail = format!("[{}]", format_prometheus_duration(r.range));
        if !r.offset.is_zero() {
            tail.push_str(&format!(" offset {}", format_duration(r.offset)));
        }
        lines.push(tail);
    }
    for line in lines {
        out.push('\n');
        pad(out, level + 1);
        out.push_str(&line);
    }
}

fn pretty_metric(out: &mut String, expr: &MetricExpr, level: usize) {
    let line = expr.to_string();
    if fits(&line, level) {
        out.push_str(&line);
        return;
    }
    match expr {
        MetricExpr::Range(r) => {
            out.push_str(r.op.as_str());
            out.push_str("(\n");
            pad(out, level + 1);
            if let Some(p) = r.param {
                out.push_str(&format_number(p));
                out.push_str(",\n");
                pad(out, level + 1);
            }
            pretty_log(out, &r.range.log, Some(&r.range), level + 1);
            out.push('\n');
            pad(out, level);
            out.push(')');
            if let Some(g) = &r.grouping {
                out.push_str(&format!(" {g}"));
            }
        }
        MetricExpr::Vector(v) => {
            out.push_str(v.op.as_str());
            if let Some(g) = &v.grouping {
                out.push_str(&format!(" {g} "));
            }
            out.push_str("(\n");
            pad(out, level + 1);
            if let Some(k) = v.param {
                out.push_str(&format!("{k},\n"));
                pad(out, level + 1);
            }
            pretty_metric(out, &v.expr, level + 1);
            out.push('\n');
            pad(out, level);
            out.push(')');
        }
        MetricExpr::Binary(b) => {
            let wrap = |out: &mut String, e: &MetricExpr, right: bool| {
                if needs_paren(e, b.op, right) {
                    out.push_str("(\n");
                    pad(out, level + 1);
                    pretty_metric(out, e, level + 1);
                    out.push('\n');
                    pad(out, level);
                    out.push(')');
                } else {
                    pretty_metric(out, e, level);
                }
            };
            wrap(out, &b.lhs, false);
            out.push('\n');
            pad(out, level);
            out.push_str(&binary_operator(b));
            out.push('\n');
            pad(out, level);
            wrap(out, &b.rhs, true);
        }
        MetricExpr::LabelReplace {
            expr,
            dst,
            replacement,
            src,
            regex,
        } => {
            out.push_str("label_replace(\n");
            pad(out, level + 1);
            pretty_metric(out, expr, level + 1);
            for arg in [dst, replacement, src, regex] {
                out.push_str(",\n");
                pad(out, level + 1);
                out.push_str(&quoted(arg));
            }
            out.push('\n');
            pad(out, level);
            out.push(')');
        }
        MetricExpr::Paren(inner) => {
            out.push_str("(\n");
            pad(out, level + 1);
            pretty_metric(out, inner, level + 1);
            out.push('\n');
            pad(out, level);
            out.push(')');
        }
        MetricExpr::Literal(_) | MetricExpr::VectorLiteral(_) => out.push_str(&line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_round_trip_through_the_lexer() {
        for n in [
            0u64,
            1,
            999,
            1000,
            1024,
            1_500_000,
            1_572_864,
            3 << 30,
            7_000_000_000,
        ] {
            let text = format_bytes(n);
            assert_eq!(crate::lexer::parse_bytes(&text), Some(n), "{text}");
        }
        assert_eq!(format_bytes(1024), "1KiB");
        assert_eq!(format_bytes(2_000_000), "2MB");
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(3900),
            Duration::from_nanos(1500),
            Duration::from_secs(86400),
        ] {
            let text = format_duration(d);
            assert_eq!(
                crate::lexer::parse_logql_duration(&text),
                Some((d, false)),
                "{text}"
            );
        }
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(1e300), "1e300");
    }
}
