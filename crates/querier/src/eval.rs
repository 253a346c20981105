//! What the HTTP API asks of query evaluation, and the results it encodes.
//!
//! [`Evaluator`] is the API's one entry point into evaluation. Until the
//! LogQL engine lands it answers stream selectors (log queries) through the
//! [`LogSource`] and constant expressions such as `vector(1)+vector(1)`
//! (Grafana's "Save & test"); everything else is a 400.

use std::time::Instant;

use lucia_common::labels::Labels;
use lucia_common::matchers::parse_selector;

use crate::QueryError;
use crate::source::{Direction, LogSource, SelectRequest, StreamData};

/// A range query (`query_range`).
#[derive(Debug, Clone)]
pub struct RangeQuery {
    pub tenant: String,
    pub query: String,
    /// Unix nanoseconds, both inclusive as in Loki.
    pub start: i64,
    pub end: i64,
    /// Nanoseconds between points of a metric query.
    pub step: i64,
    /// Nanoseconds between entries of a log query (0 = every entry).
    pub interval: i64,
    pub limit: usize,
    pub direction: Direction,
}

/// An instant query (`query`).
#[derive(Debug, Clone)]
pub struct InstantQuery {
    pub tenant: String,
    pub query: String,
    /// Unix nanoseconds.
    pub time: i64,
    pub limit: usize,
    pub direction: Direction,
}

pub use crate::engine::{
    QueryResult as QueryOutput, ResultData, ResultEntry, Sample, Series, Statistics as Stats,
    StreamResult,
};

/// Evaluates queries against a [`LogSource`].
pub struct Evaluator<S> {
    source: S,
}

impl<S: LogSource> Evaluator<S> {
    pub fn new(source: S) -> Self {
        Self { source }
    }

    pub fn source(&self) -> &S {
        &self.source
    }

    /// Whether `query` selects log lines (as opposed to a metric query).
    pub fn is_log_query(&self, query: &str) -> Result<bool, QueryError> {
        match parse(query)? {
            Parsed::Selector(_) => Ok(true),
            Parsed::Const(_) => Ok(false),
        }
    }

    /// Pretty-prints `query` (`format_query`).
    pub fn format(&self, query: &str) -> Result<String, QueryError> {
        match parse(query)? {
            Parsed::Selector(matchers) => {
                let parts: Vec<String> = matchers.iter().map(ToString::to_string).collect();
                Ok(format!("{{{}}}", parts.join(", ")))
            }
            Parsed::Const(_) => Ok(query.trim().to_string()),
        }
    }

    pub async fn range(&self, q: RangeQuery) -> Result<QueryOutput, QueryError> {
        let started = Instant::now();
        match parse(&q.query)? {
            Parsed::Selector(matchers) => {
                let streams = self
                    .source
                    .select(SelectRequest {
                        tenant: q.tenant,
                        matchers,
                        start: q.start,
                        // Loki's range is inclusive of `end`.
                        end: q.end.saturating_add(1),
                        direction: q.direction,
                        limit: q.limit,
                    })
                    .await?;
                Ok(log_output(
                    streams,
                    q.limit,
                    q.direction,
                    q.interval,
                    started,
                ))
            }
            Parsed::Const(value) => {
                let step = q.step.max(1);
                let mut points = Vec::new();
                let mut ts = q.start;
                while ts <= q.end {
                    points.push((ts, value.value));
                    ts = ts.saturating_add(step);
                }
                Ok(QueryOutput {
                    data: ResultData::Matrix(vec![Series {
                        labels: Labels::new(),
                        points,
                    }]),
                    stats: stats(started, 0, 0, 0),
                })
            }
        }
    }

    pub async fn instant(&self, q: InstantQuery) -> Result<QueryOutput, QueryError> {
        let started = Instant::now();
        match parse(&q.query)? {
            Parsed::Selector(_) => Err(QueryError::BadRequest(
                "log queries are not supported as an instant query type, please change your query to a range query type".into(),
            )),
            Parsed::Const(value) => {
                let data = if value.is_vector {
                    ResultData::Vector(vec![Sample {
                        labels: Labels::new(),
                        ts: q.time,
                        value: value.value,
                    }])
                } else {
                    ResultData::Scalar {
                        ts: q.time,
                        value: value.value,
                    }
                };
                Ok(QueryOutput {
                    data,
                    stats: stats(started, 0, 0, 0),
                })
            }
        }
    }
}

fn stats(started: Instant, lines: u64, bytes: u64, returned: u64) -> Stats {
    Stats {
        lines_processed: lines,
        bytes_processed: bytes,
        total_entries_returned: returned,
        exec_time: started.elapsed(),
    }
}

/// A source stream as a result: structured metadata joins the labels.
pub(crate) fn stream_result(stream: StreamData) -> Vec<StreamResult> {
    let mut out: Vec<StreamResult> = Vec::new();
    for entry in stream.entries {
        let mut labels = stream.labels.clone();
        let mut metadata = Labels::new();
        for (name, value) in &entry.metadata {
            labels.insert(name.clone(), value.clone());
            metadata.insert(name.clone(), value.clone());
        }
        let result = ResultEntry {
            ts: entry.ts,
            line: entry.line,
            structured_metadata: metadata,
            parsed: Labels::new(),
        };
        match out.iter_mut().find(|s| s.labels == labels) {
            Some(s) => s.entries.push(result),
            None => out.push(StreamResult {
                labels,
                entries: vec![result],
            }),
        }
    }
    out
}

/// Keeps the `limit` first entries over all streams in `direction`, and at
/// most one entry per `interval`.
fn log_output(
    mut streams: Vec<StreamData>,
    limit: usize,
    direction: Direction,
    interval: i64,
    started: Instant,
) -> QueryOutput {
    let lines: u64 = streams.iter().map(|s| s.entries.len() as u64).sum();
    let bytes: u64 = streams
        .iter()
        .flat_map(|s| s.entries.iter())
        .map(|e| e.line.len() as u64)
        .sum();
    if interval > 0 {
        for stream in &mut streams {
            let mut last: Option<i64> = None;
            stream.entries.retain(|e| match last {
                Some(prev) if (e.ts - prev).abs() < interval => false,
                _ => {
                    last = Some(e.ts);
                    true
                }
            });
        }
    }
    if limit > 0 {
        // (timestamp, stream, entry) of every entry, in direction order;
        // ties keep stream order. The first `limit` are kept.
        let mut all: Vec<(i64, usize, usize)> = streams
            .iter()
            .enumerate()
            .flat_map(|(si, s)| {
                s.entries
                    .iter()
                    .enumerate()
                    .map(move |(ei, e)| (e.ts, si, ei))
            })
            .collect();
        if all.len() > limit {
            match direction {
                Direction::Forward => all.sort_by_key(|&(ts, si, ei)| (ts, si, ei)),
                Direction::Backward => {
                    all.sort_by_key(|&(ts, si, ei)| (std::cmp::Reverse(ts), si, ei))
                }
            }
            let mut keep: Vec<Vec<bool>> = streams
                .iter()
                .map(|s| vec![false; s.entries.len()])
                .collect();
            for &(_, si, ei) in &all[..limit] {
                keep[si][ei] = true;
            }
            for (stream, keep) in streams.iter_mut().zip(keep) {
                let mut flags = keep.into_iter();
                stream.entries.retain(|_| flags.next().unwrap_or(false));
            }
        }
    }
    streams.retain(|s| !s.entries.is_empty());
    let returned = streams.iter().map(|s| s.entries.len() as u64).sum();
    QueryOutput {
        data: ResultData::Streams(streams.into_iter().flat_map(stream_result).collect()),
        stats: stats(started, lines, bytes, returned),
    }
}

/// What the interim evaluator understands.
enum Parsed {
    Selector(Vec<lucia_common::matchers::Matcher>),
    Const(Constant),
}

#[derive(Debug, Clone, Copy)]
struct Constant {
    value: f64,
    is_vector: bool,
}

fn parse(query: &str) -> Result<Parsed, QueryError> {
    let query = query.trim();
    if query.is_empty() {
        return Err(QueryError::BadRequest(
            "query parameter is empty: send a LogQL query in `query`".into(),
        ));
    }
    if query.starts_with('{') {
        return parse_selector(query)
            .map(Parsed::Selector)
            .map_err(|err| QueryError::BadRequest(format!("parse error: {err}")));
    }
    let mut parser = ConstParser {
        input: query.as_bytes(),
        pos: 0,
    };
    let value = parser.expr()?;
    parser.skip_ws();
    if parser.pos != parser.input.len() {
        return Err(parser.error("unexpected input"));
    }
    Ok(Parsed::Const(value))
}

/// Constant arithmetic over numbers and `vector(<number>)`.
struct ConstParser<'a> {
    input: &'a [u8],
    pos: usize,
}

impl ConstParser<'_> {
    fn error(&self, what: &str) -> QueryError {
        QueryError::BadRequest(format!(
            "parse error at line 1, col {}: syntax error: {what}",
            self.pos + 1
        ))
    }

    fn skip_ws(&mut self) {
        while self
            .input
            .get(self.pos)
            .is_some_and(u8::is_ascii_whitespace)
        {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.input.get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Constant, QueryError> {
        let mut left = self.term()?;
        loop {
            let op = if self.eat(b'+') {
                b'+'
            } else if self.eat(b'-') {
                b'-'
            } else {
                return Ok(left);
            };
            let right = self.term()?;
            left = combine(left, right, op);
        }
    }

    fn term(&mut self) -> Result<Constant, QueryError> {
        let mut left = self.atom()?;
        loop {
            let op = if self.eat(b'*') {
                b'*'
            } else if self.eat(b'/') {
                b'/'
            } else {
                return Ok(left);
            };
            let right = self.atom()?;
            left = combine(left, right, op);
        }
    }

    fn atom(&mut self) -> Result<Constant, QueryError> {
        self.skip_ws();
        if self.eat(b'(') {
            let inner = self.expr()?;
            if !self.eat(b')') {
                return Err(self.error("expected )"));
            }
            return Ok(inner);
        }
        if self.eat(b'-') {
            let inner = self.atom()?;
            return Ok(Constant {
                value: -inner.value,
                ..inner
            });
        }
        let rest = &self.input[self.pos..];
        if rest.starts_with(b"vector") {
            self.pos += "vector".len();
            if !self.eat(b'(') {
                return Err(self.error("expected ( after vector"));
            }
            let inner = self.expr()?;
            if !self.eat(b')') {
                return Err(self.error("expected )"));
            }
            return Ok(Constant {
                value: inner.value,
                is_vector: true,
            });
        }
        let len = rest
            .iter()
            .position(|c| !(c.is_ascii_digit() || *c == b'.'))
            .unwrap_or(rest.len());
        let text = std::str::from_utf8(&rest[..len]).unwrap_or("");
        let value: f64 = text
            .parse()
            .map_err(|_| self.error("unexpected input: only stream selectors and constant expressions are evaluated yet"))?;
        self.pos += len;
        Ok(Constant {
            value,
            is_vector: false,
        })
    }
}

fn combine(a: Constant, b: Constant, op: u8) -> Constant {
    let value = match op {
        b'+' => a.value + b.value,
        b'-' => a.value - b.value,
        b'*' => a.value * b.value,
        _ => a.value / b.value,
    };
    Constant {
        value,
        is_vector: a.is_vector || b.is_vector,
    }
}
