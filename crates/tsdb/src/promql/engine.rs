//! Evaluation of PromQL expressions with Prometheus 3 semantics.
//!
//! A range query is evaluated as one instant evaluation per step; every
//! instant evaluation sees the same query start and end (for `@ start()`
//! and `@ end()`). Series are read once per selector and query and cached.
//!
//! Metric names are removed late, as Prometheus 3 does with delayed name
//! removal: operations that drop the name only flag the element, and the
//! flagged names go at the end of each step (`label_replace`/`label_join`
//! onto `__name__` clear the flag).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promql_parser::label::{MatchOp as PMatchOp, Matchers};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};

use super::functions;
use super::histogram::FloatHistogram;
use super::source::{LabelMatcher, MatchOp, MixedSeries, SeriesSource};
use super::{DisplayLabels, Error, Labels, METRIC_NAME, Sample, Series, is_stale_nan};

/// A query result.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct Engine {
    /// How far back a vector selector looks for a sample (ms).
    pub lookback_ms: i64,
    /// The step of a subquery written without one (ms).
    pub subquery_step_ms: i64,
    /// The most samples a query may hold in memory at once (Prometheus'
    /// `--query.max-samples`): what its selectors load for one step plus,
    /// for a range query, the result points gathered so far.
    pub max_samples: usize,
    /// How long one query may run (Prometheus' `--query.timeout`); `None`
    /// for no limit. Checked cooperatively between steps and while
    /// samples are loaded.
    pub timeout: Option<Duration>,
    /// Set by the caller to stop a running query (the client went away).
    pub cancel: Option<Arc<AtomicBool>>,
}

/// Prometheus' message when a query exceeds `--query.max-samples`.
pub const TOO_MANY_SAMPLES: &str =
    "query processing would load too many samples into memory in query execution";
/// Prometheus' message when one step yields two elements with one label set.
pub(crate) const DUPLICATE_LABELSET: &str = "vector cannot contain metrics with the same labelset";
/// Prometheus' message when a query exceeds its timeout.
pub const TIMED_OUT: &str = "query timed out in expression evaluation";
/// Prometheus' message when a query is canceled.
pub const CANCELED: &str = "query was canceled in expression evaluation";

/// The most points a range query may return per series, as Prometheus'
/// HTTP API allows.
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

impl Default for Engine {
    fn default() -> Self {
        Self {
            lookback_ms: 5 * 60 * 1000,
            subquery_step_ms: 60 * 1000,
            max_samples: 50_000_000,
            timeout: Some(Duration::from_secs(120)),
            cancel: None,
        }
    }
}

/// Parses a query.
pub fn parse(query: &str) -> Result<Expr, Error> {
    promql_parser::parser::parse(query).map_err(Error::Parse)
}

fn type_name(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
    }
}

impl Engine {
    /// Evaluates `query` at `t_ms`.
    pub fn instant_query(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        t_ms: i64,
    ) -> Result<Value, Error> {
        self.instant_query_parsed(source, &parse(query)?, query, t_ms)
    }

    /// Like [`Engine::instant_query`], for a query the caller has parsed.
    pub fn instant_query_parsed(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        query: &str,
        t_ms: i64,
    ) -> Result<Value, Error> {
        let mut ev = Evaluator::new(self, source, t_ms, t_ms, 0).with_bounds(expr);
        ev.invalid_strings = invalid_utf8_literals(query);
        Ok(match ev.eval(expr, t_ms)? {
            Val::Scalar(f) => Value::Scalar(f),
            Val::Str(s) => Value::String(s),
            Val::Vector(v) => Value::Vector(finish_vector(v)?),
            Val::Matrix(m) => {
                let mut out: Vec<Series> = Vec::with_capacity(m.series.len());
                let mut seen = HashSet::new();
                for s in m.series {
                    let mut labels = Arc::unwrap_or_clone(s.labels);
                    if s.drop {
                        drop_name(&mut labels);
                    }
                    if !seen.insert(labels.clone()) {
                        return Err(Error::Execution(DUPLICATE_LABELSET.into()));
                    }
                    out.push(Series {
                        labels,
                        points: s.points.into_vec(),
                        histograms: s.hists.iter().map(|(t, h)| (*t, (**h).clone())).collect(),
                    });
                }
                Value::Matrix(out)
            }
        })
    }

    /// Evaluates `query` at every step from `start_ms` to `end_ms`; the
    /// result is a matrix sorted by labels.
    pub fn range_query(
        &self,
        source: &dyn SeriesSource,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>, Error> {
        self.range_query_parsed(source, &parse(query)?, query, start_ms, end_ms, step_ms)
    }

    /// Like [`Engine::range_query`], for a query the caller has parsed.
    pub fn range_query_parsed(
        &self,
        source: &dyn SeriesSource,
        expr: &Expr,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    ) -> Result<Vec<Series>, Error> {
        if step_ms <= 0 {
            return Err(Error::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end_ms < start_ms {
            return Err(Error::Parse(
                "end timestamp must not be before start time".into(),
            ));
        }
        if (end_ms - start_ms) / step_ms > MAX_POINTS_PER_SERIES {
            return Err(Error::Parse(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)".into(),
            ));
        }
        let vt = expr.value_type();
        if !matches!(vt, ValueType::Vector | ValueType::Scalar) {
            return Err(Error::Parse(format!(
                "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                type_name(vt)
            )));
        }
        let mut ev = Evaluator::new(self, source, start_ms, end_ms, step_ms).with_bounds(expr);
        ev.invalid_strings = invalid_utf8_literals(query);
        let mut out = RangeOutput::default();
        let no_labels = Arc::new(Labels::new());
        let mut t = start_ms;
        // Result points gathered so far: they stay in memory while the
        // next steps load their samples.
        let mut held = 0usize;
        while t <= end_ms {
            ev.check_deadline()?;
            ev.samples.set(held);
            match ev.eval(expr, t)? {
                Val::Scalar(f) => {
                    held = held.saturating_add(1);
                    let i = out.position(&no_labels, false);
                    out.push(i, t, f, None)?
                }
                Val::Vector(v) => {
                    held = held.saturating_add(v.len());
                    for el in v {
                        let i = out.position(&el.labels, el.drop);
                        out.push(i, t, el.f, el.h.map(Arc::unwrap_or_clone))?;
                    }
                }
                Val::Str(_) | Val::Matrix(_) => {
                    return Err(Error::Parse(
                        "invalid expression type for range query, must be Scalar or instant Vector"
                            .into(),
                    ));
                }
            }
            if held > self.max_samples {
                return exec(TOO_MANY_SAMPLES);
            }
            t = t.saturating_add(step_ms);
            if t == i64::MAX {
                break;
            }
        }
        let mut out = out.series;
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(out)
    }
}

/// The series of a range query's result as the steps add points to them.
#[derive(Default)]
struct RangeOutput {
    series: Vec<Series>,
    /// Series by a hash of their labels, so that a step neither clones nor
    /// rebuilds a label set it has seen before.
    index: LabelIndex,
    /// Series by the address of the label set (and the drop flag in its
    /// lowest bit) of the elements they came from: the elements of one
    /// series share a label set across steps.
    by_address: AddressMemo,
}

impl RangeOutput {
    fn position(&mut self, labels: &Arc<Labels>, drop: bool) -> usize {
        // Label sets are at least 8-aligned, so the lowest bit is free.
        let address = Arc::as_ptr(labels) as usize | usize::from(drop);
        if let Some(i) = self.by_address.get(address) {
            return i;
        }
        let visible = || visible_labels(labels, drop);
        let hash = hash_labels(visible());
        let series = &self.series;
        let i = match self
            .index
            .find(hash, |i| series[i].labels.iter().eq(visible()))
        {
            Some(i) => i,
            None => {
                self.series.push(Series {
                    labels: visible().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    points: Vec::new(),
                    histograms: Vec::new(),
                });
                self.index.insert(hash, self.series.len() - 1);
                self.series.len() - 1
            }
        };
        self.by_address.remember(address, labels, i);
        i
    }

    fn push(&mut self, i: usize, t: i64, f: f64, h: Option<FloatHistogram>) -> Result<(), Error> {
        let series = &mut self.series[i];
        let last = series
            .points
            .last()
            .map(|p| p.0)
            .max(series.histograms.last().map(|p| p.0));
        if last == Some(t) {
            return Err(Error::Execution(DUPLICATE_LABELSET.into()));
        }
        match h {
            Some(h) => series.histograms.push((t, h)),
            None => series.points.push((t, f)),
        }
        Ok(())
    }
}

/// Removes the metric name, and the type and unit labels that belong to it
/// (`__type__`, `__unit__`).
fn drop_name(labels: &mut Labels) {
    labels.remove(METRIC_NAME);
    labels.remove("__type__");
    labels.remove("__unit__");
}

/// Removes flagged metric names and rejects duplicate label sets.
fn finish_vector(v: Vec<El>) -> Result<Vec<Sample>, Error> {
    let mut index = LabelIndex::default();
    let mut out: Vec<Sample> = Vec::with_capacity(v.len());
    for el in v {
        let mut labels = Arc::unwrap_or_clone(el.labels);
        if el.drop {
            drop_name(&mut labels);
        }
        let hash = hash_labels(labels.iter());
        if index.find(hash, |i| out[i].labels == labels).is_some() {
            return Err(Error::Execution(DUPLICATE_LABELSET.into()));
        }
        index.insert(hash, out.len());
        out.push(Sample {
            labels,
            f: el.f,
            h: el.h.map(Arc::unwrap_or_clone),
        });
    }
    Ok(out)
}

/// True for the labels that go with the metric name when it is dropped.
fn is_name_label(name: &str) -> bool {
    name == METRIC_NAME || name == "__type__" || name == "__unit__"
}

/// The labels an element has once its flagged metric name is removed.
fn visible_labels(labels: &Labels, drop: bool) -> impl Iterator<Item = (&String, &String)> {
    labels
        .iter()
        .filter(move |(k, _)| !(drop && is_name_label(k)))
}

/// A hash of label pairs: Prometheus' label hash (xxh64 of `name 0xff
/// value 0xff ...`) over the pairs given, for [`LabelIndex`] (collisions
/// are resolved by comparing the labels) and [`label_hash`].
pub(crate) fn hash_labels<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> u64 {
    let mut h = xxhash_rust::xxh64::Xxh64::new(0);
    for (k, v) in pairs {
        h.update(k.as_bytes());
        h.update(&[0xff]);
        h.update(v.as_bytes());
        h.update(&[0xff]);
    }
    h.digest()
}

/// Positions of label sets by their hash: a lookup needs neither a clone
/// nor a materialised key, only the caller's comparison on a hash hit.
#[derive(Default)]
pub(crate) struct LabelIndex {
    by_hash: HashMap<u64, Vec<usize>, std::hash::BuildHasherDefault<HashIsKey>>,
}

impl LabelIndex {
    /// The position whose labels `eq` accepts among those with `hash`.
    pub(crate) fn find(&self, hash: u64, mut eq: impl FnMut(usize) -> bool) -> Option<usize> {
        self.by_hash
            .get(&hash)
            .and_then(|slots| slots.iter().copied().find(|&i| eq(i)))
    }

    pub(crate) fn insert(&mut self, hash: u64, position: usize) {
        self.by_hash.entry(hash).or_default().push(position);
    }
}

/// The keys of [`LabelIndex`] are hashes already.
#[derive(Default)]
pub(crate) struct HashIsKey(u64);

impl std::hash::Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// An instant vector element during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct El {
    /// Shared with the series it came from: a step clones a pointer, not
    /// the label set (`Arc::make_mut` copies on change).
    pub labels: Arc<Labels>,
    pub f: f64,
    /// A native histogram value (then `f` is unused).
    pub h: Option<Arc<FloatHistogram>>,
    /// The metric name is to be removed at the end.
    pub drop: bool,
}

/// A range vector series during evaluation.
#[derive(Debug, Clone)]
pub(crate) struct MSer {
    pub labels: Arc<Labels>,
    pub points: Points,
    /// Native histogram points, sorted by time.
    pub hists: Vec<(i64, Arc<FloatHistogram>)>,
    pub drop: bool,
}

/// The float points of a range vector series: a window onto a fetched
/// series (each step of a range query selects one without copying) or
/// points of their own (subqueries).
#[derive(Debug, Clone)]
pub(crate) enum Points {
    Window(Rc<[(i64, f64)]>, std::ops::Range<usize>),
    Owned(Vec<(i64, f64)>),
}

impl Points {
    pub(crate) fn into_vec(self) -> Vec<(i64, f64)> {
        match self {
            Points::Window(data, range) => data[range].to_vec(),
            Points::Owned(v) => v,
        }
    }
}

impl std::ops::Deref for Points {
    type Target = [(i64, f64)];

    fn deref(&self) -> &Self::Target {
        match self {
            Points::Window(data, range) => &data[range.clone()],
            Points::Owned(v) => v,
        }
    }
}

/// A range vector: its series and the window `(end - range, end]`.
#[derive(Debug, Clone)]
pub(crate) struct Mat {
    pub series: Vec<MSer>,
    pub end: i64,
    pub range: i64,
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(f64),
    Str(String),
    Vector(Vec<El>),
    Matrix(Mat),
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Scalar(_) => "scalar",
            Val::Str(_) => "string",
            Val::Vector(_) => "instant vector",
            Val::Matrix(_) => "range vector",
        }
    }
}

pub(crate) fn exec<T>(msg: impl Into<String>) -> Result<T, Error> {
    Err(Error::Execution(msg.into()))
}

fn duration_ms(d: &Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

pub(crate) struct Evaluator<'a> {
    source: &'a dyn SeriesSource,
    lookback: i64,
    sub_step: i64,
    pub(crate) start: i64,
    pub(crate) end: i64,
    /// The range query step (0 for an instant query).
    pub(crate) step: i64,
    max_samples: usize,
    /// Samples loaded by selectors and subqueries so far.
    samples: std::cell::Cell<usize>,
    /// When the query must stop, and the caller's cancel flag.
    deadline: Option<Instant>,
    cancel: Option<Arc<AtomicBool>>,
    /// Calls of `account` since the deadline was last checked.
    since_check: std::cell::Cell<u32>,
    /// The time range every selector of the query reads from.
    bounds: (i64, i64),
    /// String literals that are invalid UTF-8 in Go (see
    /// [`invalid_utf8_literals`]).
    pub(crate) invalid_strings: HashMap<String, String>,
    /// Fetched series by matchers, shared by equal selectors.
    cache: RefCell<HashMap<String, Rc<Vec<Fetched>>>>,
    /// Fetched series by the selector's address in the query's syntax tree.
    by_selector: RefCell<HashMap<usize, Rc<Vec<Fetched>>>>,
    /// The addresses of the query's own selectors (see `fetch`).
    query_selectors: HashSet<usize>,
    /// The groups of each grouping the query's aggregations use.
    group_memos: RefCell<Vec<(Grouping, GroupMemo)>>,
}

/// A selector's address, which names it while its syntax tree lives.
fn selector_place(vs: &VectorSelector) -> usize {
    std::ptr::from_ref(vs) as usize
}

/// A series read from the source, its labels shared by every element the
/// query makes of it.
pub(crate) struct Fetched {
    labels: Arc<Labels>,
    samples: Rc<[(i64, f64)]>,
    /// The samples without staleness markers, which range vectors leave
    /// out; `None` when there are none to leave out.
    unmarked: Option<Rc<[(i64, f64)]>>,
    histograms: Vec<(i64, Arc<FloatHistogram>)>,
    /// Where the last lookup in `samples` ended: a range query's steps move
    /// forward, so the next lookup usually starts a few samples on.
    cursor: std::cell::Cell<usize>,
}

impl Fetched {
    /// The number of samples at or before `t`.
    fn count_until(&self, t: i64) -> usize {
        const SCAN: usize = 8;
        let samples = &self.samples;
        let mut i = self.cursor.get();
        if i > samples.len() || (i > 0 && samples[i - 1].0 > t) {
            i = samples.partition_point(|p| p.0 <= t);
        } else {
            let mut scanned = 0;
            while i < samples.len() && samples[i].0 <= t {
                i += 1;
                scanned += 1;
                if scanned == SCAN {
                    i += samples[i..].partition_point(|p| p.0 <= t);
                    break;
                }
            }
        }
        self.cursor.set(i);
        i
    }

    /// What a range vector selects from.
    fn range_samples(&self) -> &Rc<[(i64, f64)]> {
        self.unmarked.as_ref().unwrap_or(&self.samples)
    }
}

impl From<MixedSeries> for Fetched {
    fn from(s: MixedSeries) -> Self {
        let unmarked = s.samples.iter().any(|p| is_stale_nan(p.1)).then(|| {
            s.samples
                .iter()
                .copied()
                .filter(|p| !is_stale_nan(p.1))
                .collect()
        });
        Self {
            labels: Arc::new(s.labels),
            samples: s.samples.into(),
            unmarked,
            histograms: s.histograms,
            cursor: std::cell::Cell::new(0),
        }
    }
}

impl<'a> Evaluator<'a> {
    fn new(engine: &Engine, source: &'a dyn SeriesSource, start: i64, end: i64, step: i64) -> Self {
        Self {
            max_samples: engine.max_samples,
            samples: std::cell::Cell::new(0),
            deadline: engine.timeout.and_then(|d| Instant::now().checked_add(d)),
            cancel: engine.cancel.clone(),
            since_check: std::cell::Cell::new(0),
            step,
            bounds: (i64::MIN, i64::MAX),
            invalid_strings: HashMap::new(),
            source,
            lookback: engine.lookback_ms,
            sub_step: engine.subquery_step_ms.max(1),
            start,
            end,
            cache: RefCell::new(HashMap::new()),
            by_selector: RefCell::new(HashMap::new()),
            query_selectors: HashSet::new(),
            group_memos: RefCell::new(Vec::new()),
        }
    }

    /// Sets the time range to read: the union over the query's selectors
    /// of what they can look at when evaluated from `start` to `end`.
    fn with_bounds(mut self, expr: &Expr) -> Self {
        let mut b = (i64::MAX, i64::MIN);
        let mut places = HashSet::new();
        self.walk_bounds(expr, self.start, self.end, &mut b, &mut places);
        self.query_selectors = places;
        if b.0 <= b.1 {
            self.bounds = b;
        }
        self
    }

    fn at_range(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        s: i64,
        e: i64,
    ) -> (i64, i64) {
        match at {
            None => (
                s.saturating_sub(offset_ms(offset)),
                e.saturating_sub(offset_ms(offset)),
            ),
            Some(_) => {
                let t = self.effective_time(at, offset, s);
                (t, t)
            }
        }
    }

    fn walk_bounds(
        &self,
        expr: &Expr,
        s: i64,
        e: i64,
        b: &mut (i64, i64),
        places: &mut HashSet<usize>,
    ) {
        let mut widen = |lo: i64, hi: i64| {
            b.0 = b.0.min(lo);
            b.1 = b.1.max(hi);
        };
        match expr {
            Expr::VectorSelector(vs) => {
                places.insert(selector_place(vs));
                let (lo, hi) = self.at_range(&vs.at, &vs.offset, s, e);
                widen(lo.saturating_sub(self.lookback), hi);
            }
            Expr::MatrixSelector(ms) => {
                places.insert(selector_place(&ms.vs));
                let (lo, hi) = self.at_range(&ms.vs.at, &ms.vs.offset, s, e);
                widen(lo.saturating_sub(duration_ms(&ms.range)), hi);
            }
            Expr::Subquery(sq) => {
                let (lo, hi) = self.at_range(&sq.at, &sq.offset, s, e);
                self.walk_bounds(
                    &sq.expr,
                    lo.saturating_sub(duration_ms(&sq.range)),
                    hi,
                    b,
                    places,
                );
            }
            Expr::Aggregate(a) => {
                self.walk_bounds(&a.expr, s, e, b, places);
                if let Some(p) = &a.param {
                    self.walk_bounds(p, s, e, b, places);
                }
            }
            Expr::Unary(u) => self.walk_bounds(&u.expr, s, e, b, places),
            Expr::Paren(p) => self.walk_bounds(&p.expr, s, e, b, places),
            Expr::Binary(x) => {
                self.walk_bounds(&x.lhs, s, e, b, places);
                self.walk_bounds(&x.rhs, s, e, b, places);
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    self.walk_bounds(a, s, e, b, places);
                }
            }
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => {}
        }
    }

    /// The time a selector or subquery looks at when evaluated at `t`.
    pub(crate) fn effective_time(
        &self,
        at: &Option<AtModifier>,
        offset: &Option<Offset>,
        t: i64,
    ) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.start,
            Some(AtModifier::End) => self.end,
            Some(AtModifier::At(st)) => system_time_ms(st),
        };
        base.saturating_sub(offset_ms(offset))
    }

    fn fetch(&self, vs: &VectorSelector) -> Result<Rc<Vec<Fetched>>, Error> {
        // A range query evaluates each selector once per step: find it by
        // its place in the syntax tree before building matchers and a key.
        // Only the query's own selectors are found so: one built during
        // evaluation (`info()`) may reuse a freed address.
        let place = selector_place(vs);
        if !self.query_selectors.contains(&place) {
            return self.fetch_by_matchers(vs);
        }
        if let Some(hit) = self.by_selector.borrow().get(&place) {
            return Ok(hit.clone());
        }
        let series = self.fetch_by_matchers(vs)?;
        self.by_selector.borrow_mut().insert(place, series.clone());
        Ok(series)
    }

    fn fetch_by_matchers(&self, vs: &VectorSelector) -> Result<Rc<Vec<Fetched>>, Error> {
        let mut matchers = convert_matchers(&vs.matchers)?;
        if let Some(name) = &vs.name {
            matchers.push(LabelMatcher::new(METRIC_NAME, MatchOp::Equal, name)?);
        }
        let key = matchers
            .iter()
            .map(|m| format!("{}\u{1}{:?}\u{1}{}", m.name, m.op, m.value))
            .collect::<Vec<_>>()
            .join("\u{2}");
        if let Some(hit) = self.cache.borrow().get(&key) {
            return Ok(hit.clone());
        }

        let series: Rc<Vec<Fetched>> = Rc::new(
            self.source
                .select_mixed(&matchers, self.bounds.0, self.bounds.1)?
                .into_iter()
                .map(Fetched::from)
                .collect(),
        );
        self.cache.borrow_mut().insert(key, series.clone());
        self.check_deadline()?;
        Ok(series)
    }

    /// Counts `n` samples against the query's limit, and now and then
    /// checks the deadline.
    fn account(&self, n: usize) -> Result<(), Error> {
        let total = self.samples.get().saturating_add(n);
        self.samples.set(total);
        if total > self.max_samples {
            return exec(TOO_MANY_SAMPLES);
        }
        let calls = self.since_check.get() + 1;
        if calls >= 1024 {
            self.since_check.set(0);
            self.check_deadline()?;
        } else {
            self.since_check.set(calls);
        }
        Ok(())
    }

    /// Fails once the query ran past its timeout or was canceled.
    pub(crate) fn check_deadline(&self) -> Result<(), Error> {
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error::Canceled(CANCELED.into()));
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Error::Timeout(TIMED_OUT.into()));
        }
        Ok(())
    }

    pub(crate) fn eval(&self, expr: &Expr, t: i64) -> Result<Val, Error> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Val::Str(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Val::Scalar(f) => Ok(Val::Scalar(-f)),
                Val::Vector(v) => Ok(Val::Vector(
                    v.into_iter()
                        .map(|el| El {
                            f: -el.f,
                            h: el.h.map(|h| {
                                let mut h = (*h).clone();
                                h.mul(-1.0);
                                Arc::new(h)
                            }),
                            drop: true,
                            labels: el.labels,
                        })
                        .collect(),
                )),
                other => exec(format!("unary minus on {}", other.kind())),
            },
            Expr::VectorSelector(vs) => self.select_vector(vs, t).map(Val::Vector),
            Expr::MatrixSelector(ms) => {
                let end = self.effective_time(&ms.vs.at, &ms.vs.offset, t);
                let range = duration_ms(&ms.range);
                self.select_matrix(&ms.vs, end, range).map(Val::Matrix)
            }
            Expr::Subquery(sq) => self.eval_subquery(sq, t).map(Val::Matrix),
            Expr::Aggregate(a) => self.eval_aggregate(a, t),
            Expr::Binary(b) => self.eval_binary(b, t),
            Expr::Call(c) => self.eval_call(c, t),
            Expr::Extension(_) => exec("extension expressions are not supported"),
        }
    }

    pub(crate) fn select_vector(&self, vs: &VectorSelector, t: i64) -> Result<Vec<El>, Error> {
        let te = self.effective_time(&vs.at, &vs.offset, t);
        let series = self.fetch(vs)?;
        let mut out = Vec::with_capacity(series.len());
        for s in series.iter() {
            if let Some((_, el)) = self.sample_at(s, te) {
                self.account(1)?;
                out.push(el);
            }
        }
        Ok(out)
    }

    /// Like `select_vector`, with each sample's own timestamp.
    pub(crate) fn select_vector_ts(
        &self,
        vs: &VectorSelector,
        t: i64,
    ) -> Result<Vec<(El, i64)>, Error> {
        let te = self.effective_time(&vs.at, &vs.offset, t);
        let series = self.fetch(vs)?;
        let mut out = Vec::new();
        for s in series.iter() {
            if let Some((ts, el)) = self.sample_at(s, te) {
                self.account(1)?;
                out.push((el, ts));
            }
        }
        Ok(out)
    }

    /// A series' latest sample at or before `te` within the lookback
    /// window, and its timestamp; `None` when it is missing or stale.
    fn sample_at(&self, s: &Fetched, te: i64) -> Option<(i64, El)> {
        let idx = s.count_until(te);
        let float = idx.checked_sub(1).map(|i| s.samples[i]);
        let hist = if s.histograms.is_empty() {
            None
        } else {
            let hidx = s.histograms.partition_point(|p| p.0 <= te);
            hidx.checked_sub(1).map(|i| &s.histograms[i])
        };
        let (ts, f, h) = match (float, hist) {
            (None, None) => return None,
            (Some((ts, f)), None) => (ts, f, None),
            (Some((ts, f)), Some((ht, _))) if ts >= *ht => (ts, f, None),
            (_, Some((ht, h))) => (*ht, 0.0, Some(h.clone())),
        };
        if ts <= te.saturating_sub(self.lookback) || (h.is_none() && is_stale_nan(f)) {
            return None;
        }
        Some((
            ts,
            El {
                labels: s.labels.clone(),
                f,
                h,
                drop: false,
            },
        ))
    }

    fn select_matrix(&self, vs: &VectorSelector, end: i64, range: i64) -> Result<Mat, Error> {
        let series = self.fetch(vs)?;
        let start = end.saturating_sub(range);
        let mut out = Vec::new();
        for s in series.iter() {
            let data = s.range_samples();
            let lo = data.partition_point(|p| p.0 <= start);
            let hi = data.partition_point(|p| p.0 <= end);
            let points = Points::Window(data.clone(), lo..hi.max(lo));
            let hlo = s.histograms.partition_point(|p| p.0 <= start);
            let hhi = s.histograms.partition_point(|p| p.0 <= end);
            let hists = s.histograms[hlo..hhi.max(hlo)].to_vec();
            if points.is_empty() && hists.is_empty() {
                continue;
            }
            self.account(points.len() + hists.len())?;
            out.push(MSer {
                labels: s.labels.clone(),
                points,
                hists,
                drop: false,
            });
        }
        Ok(Mat {
            series: out,
            end,
            range,
        })
    }

    fn eval_subquery(&self, sq: &SubqueryExpr, t: i64) -> Result<Mat, Error> {
        let end = self.effective_time(&sq.at, &sq.offset, t);
        let range = duration_ms(&sq.range);
        let step = match &sq.step {
            Some(d) if !d.is_zero() => duration_ms(d).max(1),
            _ => self.sub_step,
        };
        let lowest = end.saturating_sub(range);
        let mut ts = lowest
            .div_euclid(step)
            .saturating_add(1)
            .saturating_mul(step);
        let mut index = LabelIndex::default();
        let mut series: Vec<MSer> = Vec::new();
        while ts <= end {
            self.check_deadline()?;
            let v = match self.eval(&sq.expr, ts)? {
                Val::Vector(v) => v,
                Val::Scalar(f) => vec![El {
                    labels: Arc::new(Labels::new()),
                    f,
                    h: None,
                    drop: false,
                }],
                other => return exec(format!("subquery over {}", other.kind())),
            };
            for el in v {
                let hash = hash_labels(el.labels.iter());
                let i = match index.find(hash, |i| series[i].labels == el.labels) {
                    Some(i) => i,
                    None => {
                        index.insert(hash, series.len());
                        series.push(MSer {
                            labels: el.labels.clone(),
                            points: Points::Owned(Vec::new()),
                            hists: Vec::new(),
                            drop: el.drop,
                        });
                        series.len() - 1
                    }
                };
                series[i].drop |= el.drop;
                self.account(1)?;
                match el.h {
                    Some(mut h) => {
                        // Explicit hints would miss or repeat resets
                        // between the subquery's steps.
                        use super::histogram::CounterResetHint as Hint;
                        if matches!(
                            h.counter_reset_hint,
                            Hint::NotCounterReset | Hint::CounterReset
                        ) {
                            Arc::make_mut(&mut h).counter_reset_hint = Hint::Unknown;
                        }
                        series[i].hists.push((ts, h))
                    }
                    None => {
                        if let Points::Owned(points) = &mut series[i].points {
                            points.push((ts, el.f));
                        }
                    }
                }
            }
            ts = match ts.checked_add(step) {
                Some(n) => n,
                None => break,
            };
        }
        Ok(Mat { series, end, range })
    }

    pub(crate) fn eval_scalar(&self, expr: &Expr, t: i64) -> Result<f64, Error> {
        match self.eval(expr, t)? {
            Val::Scalar(f) => Ok(f),
            other => exec(format!("expected scalar, got {}", other.kind())),
        }
    }

    pub(crate) fn eval_string(&self, expr: &Expr, t: i64) -> Result<String, Error> {
        match self.eval(expr, t)? {
            Val::Str(s) => Ok(s),
            other => exec(format!("expected string, got {}", other.kind())),
        }
    }

    pub(crate) fn eval_vector(&self, expr: &Expr, t: i64) -> Result<Vec<El>, Error> {
        match self.eval(expr, t)? {
            Val::Vector(v) => Ok(v),
            other => exec(format!("expected instant vector, got {}", other.kind())),
        }
    }

    pub(crate) fn eval_matrix(&self, expr: &Expr, t: i64) -> Result<Mat, Error> {
        match self.eval(expr, t)? {
            Val::Matrix(m) => Ok(m),
            other => exec(format!("expected range vector, got {}", other.kind())),
        }
    }

    fn eval_call(&self, call: &Call, t: i64) -> Result<Val, Error> {
        functions::call(self, call.func.name, &call.args.args, t)
    }

    // ---- binary operators ----

    fn eval_binary(&self, b: &BinaryExpr, t: i64) -> Result<Val, Error> {
        let op = BinOp::from_str(&b.op.to_string())?;
        let return_bool = b.return_bool();
        let lhs = self.eval(&b.lhs, t)?;
        let rhs = self.eval(&b.rhs, t)?;
        match (lhs, rhs) {
            (Val::Scalar(l), Val::Scalar(r)) => {
                let (v, keep) = op.apply(l, r);
                if op.is_comparison() {
                    Ok(Val::Scalar(if keep { 1.0 } else { 0.0 }))
                } else {
                    Ok(Val::Scalar(v))
                }
            }
            (Val::Vector(v), Val::Scalar(s)) => {
                Ok(Val::Vector(vector_scalar(op, v, s, false, return_bool)))
            }
            (Val::Scalar(s), Val::Vector(v)) => {
                Ok(Val::Vector(vector_scalar(op, v, s, true, return_bool)))
            }
            (Val::Vector(l), Val::Vector(r)) => {
                let (card, on, names) = match &b.modifier {
                    None => (VectorMatchCardinality::OneToOne, false, Vec::new()),
                    Some(m) => {
                        let (on, names) = match &m.matching {
                            None => (false, Vec::new()),
                            Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
                            Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
                        };
                        (m.card.clone(), on, names)
                    }
                };
                let matching = Grouping { by: on, names };
                match op {
                    BinOp::And | BinOp::Or | BinOp::Unless => {
                        Ok(Val::Vector(set_op(op, l, r, &matching)))
                    }
                    _ => {
                        let fill = b
                            .modifier
                            .as_ref()
                            .map(|m| (m.fill_values.lhs, m.fill_values.rhs))
                            .unwrap_or((None, None));
                        vector_vector(op, l, r, &card, &matching, return_bool, fill)
                            .map(Val::Vector)
                    }
                }
            }
            (l, r) => exec(format!(
                "binary operator between {} and {}",
                l.kind(),
                r.kind()
            )),
        }
    }

    // ---- aggregations ----

    fn eval_aggregate(&self, a: &AggregateExpr, t: i64) -> Result<Val, Error> {
        let op = a.op.to_string();
        let input = self.eval_vector(&a.expr, t)?;
        let (by, names): (bool, Vec<String>) = match &a.modifier {
            None => (true, Vec::new()),
            Some(LabelModifier::Include(ls)) => (true, ls.labels.clone()),
            Some(LabelModifier::Exclude(ls)) => (false, ls.labels.clone()),
        };
        let grouping = Grouping { by, names };
        // The memo moves out of the evaluator while this step uses it, and
        // back in afterwards.
        let mut memo = self.take_group_memo(&grouping);
        let result = self.aggregate(a, &op, input, &grouping, &mut memo, t);
        self.group_memos.borrow_mut().push((grouping, memo));
        result
    }

    /// The memo of `grouping`, out of the evaluator (an empty one at first).
    fn take_group_memo(&self, grouping: &Grouping) -> GroupMemo {
        let mut memos = self.group_memos.borrow_mut();
        match memos.iter().position(|(g, _)| g == grouping) {
            Some(i) => memos.swap_remove(i).1,
            None => GroupMemo::default(),
        }
    }

    fn aggregate(
        &self,
        a: &AggregateExpr,
        op: &str,
        input: Vec<El>,
        grouping: &Grouping,
        memo: &mut GroupMemo,
        t: i64,
    ) -> Result<Val, Error> {
        let mut groups_of = Groups::new(grouping, memo);
        match op {
            "topk" | "bottomk" => {
                let Some(param) = &a.param else {
                    return exec(format!("{op} needs a parameter"));
                };
                let k = self.eval_scalar(param, t)?;
                if k.is_nan() {
                    return exec("Parameter value is NaN");
                }
                let k = if k >= i64::MAX as f64 {
                    i64::MAX
                } else if k <= i64::MIN as f64 {
                    i64::MIN
                } else {
                    k as i64
                };
                if k < 1 {
                    return Ok(Val::Vector(Vec::new()));
                }
                let k = usize::try_from(k).unwrap_or(usize::MAX);
                let mut groups: Vec<Vec<El>> = Vec::new();
                for el in input {
                    let (i, new) = groups_of.find(&el.labels);
                    if new {
                        groups.push(Vec::new());
                    }
                    groups[i].push(el);
                }
                let top = op == "topk";
                let mut out = Vec::new();
                for mut g in groups {
                    g.retain(|el| el.h.is_none());
                    g.sort_by(|x, y| rank_cmp(x.f, y.f, top));
                    g.truncate(k);
                    out.extend(g);
                }
                Ok(Val::Vector(out))
            }
            "limitk" | "limit_ratio" => {
                let Some(param) = &a.param else {
                    return exec(format!("{op} needs a parameter"));
                };
                let p = self.eval_scalar(param, t)?;
                if p.is_nan() {
                    return exec(if op == "limitk" {
                        "Parameter value is NaN"
                    } else {
                        "Ratio value is NaN"
                    });
                }
                let mut groups: Vec<Vec<El>> = Vec::new();
                for el in input {
                    let (i, new) = groups_of.find(&el.labels);
                    if new {
                        groups.push(Vec::new());
                    }
                    groups[i].push(el);
                }
                let mut out = Vec::new();
                if op == "limitk" {
                    if p < 1.0 {
                        return Ok(Val::Vector(Vec::new()));
                    }
                    let k = if p >= usize::MAX as f64 {
                        usize::MAX
                    } else {
                        p as usize
                    };
                    for g in groups {
                        out.extend(g.into_iter().take(k));
                    }
                } else {
                    let r = p.clamp(-1.0, 1.0);
                    for g in groups {
                        out.extend(g.into_iter().filter(|el| {
                            let offset = label_hash(&el.labels) as f64 / u64::MAX as f64;
                            (r >= 0.0 && offset < r) || (r < 0.0 && offset >= 1.0 + r)
                        }));
                    }
                }
                Ok(Val::Vector(out))
            }
            "count_values" => {
                let Some(param) = &a.param else {
                    return exec("count_values needs a parameter");
                };
                let label = self.eval_string(param, t)?;
                if let Some(quoted) = self.invalid_strings.get(&label) {
                    return exec(format!("invalid label name {quoted}"));
                }
                if !valid_label_name(&label) {
                    return exec(format!("invalid label name {label:?}"));
                }
                let mut groups: Vec<(Labels, f64)> = Vec::new();
                let mut index: HashMap<Labels, usize> = HashMap::new();
                for el in input {
                    let mut key = grouping.key(&el.labels);
                    let value = match &el.h {
                        Some(h) => h.to_string(),
                        None => format_value(el.f),
                    };
                    key.insert(label.clone(), value);
                    let i = *index.entry(key.clone()).or_insert_with(|| {
                        groups.push((key, 0.0));
                        groups.len() - 1
                    });
                    groups[i].1 += 1.0;
                }
                Ok(Val::Vector(
                    groups
                        .into_iter()
                        .map(|(labels, f)| El {
                            labels: Arc::new(labels),
                            f,
                            h: None,
                            drop: false,
                        })
                        .collect(),
                ))
            }
            _ => {
                let param = match &a.param {
                    Some(p) if op == "quantile" => Some(self.eval_scalar(p, t)?),
                    _ => None,
                };
                type Group = (bool, Vec<f64>, Vec<Arc<FloatHistogram>>);
                let mut groups: Vec<Group> = Vec::new();
                for el in input {
                    let (i, new) = groups_of.find(&el.labels);
                    if new {
                        groups.push((false, Vec::new(), Vec::new()));
                    }
                    if el.drop && groups_of.key(i).contains_key(METRIC_NAME) {
                        groups[i].0 = true;
                    }
                    match el.h {
                        Some(h) => groups[i].2.push(h),
                        None => groups[i].1.push(el.f),
                    }
                }
                let mut out = Vec::with_capacity(groups.len());
                for (i, (drop, values, hists)) in groups.into_iter().enumerate() {
                    let labels = groups_of.key(i).clone();
                    match op {
                        "sum" | "avg" if !hists.is_empty() => {
                            if !values.is_empty() {
                                // Floats and histograms do not aggregate.
                                continue;
                            }
                            let Some(h) = functions::sum_histograms(&hists, op == "avg") else {
                                continue;
                            };
                            out.push(El {
                                labels,
                                f: 0.0,
                                h: Some(Arc::new(h)),
                                drop,
                            });
                            continue;
                        }
                        "count" | "group" => {}
                        _ if values.is_empty() => continue,
                        _ => {}
                    }
                    let f = match op {
                        "sum" => functions::kahan_sum(&values),
                        "avg" => functions::mean(&values),
                        "min" => values.iter().copied().fold(f64::NAN, |acc, f| {
                            if acc > f || acc.is_nan() { f } else { acc }
                        }),
                        "max" => values.iter().copied().fold(f64::NAN, |acc, f| {
                            if acc < f || acc.is_nan() { f } else { acc }
                        }),
                        "count" => (values.len() + hists.len()) as f64,
                        "group" => 1.0,
                        "stdvar" => functions::variance(&values),
                        "stddev" => functions::variance(&values).sqrt(),
                        "quantile" => functions::quantile(param.unwrap_or(f64::NAN), values),
                        other => return exec(format!("unsupported aggregation {other}")),
                    };
                    out.push(El {
                        labels,
                        f,
                        h: None,
                        drop,
                    });
                }
                Ok(Val::Vector(out))
            }
        }
    }
}

/// The labels an aggregation groups by (`by (names)` or `without (names)`,
/// which also drops the metric name), or those a binary operation matches
/// on (`on (names)` or `ignoring (names)`, the same rule).
#[derive(PartialEq)]
struct Grouping {
    by: bool,
    names: Vec<String>,
}

impl Grouping {
    fn includes(&self, name: &str) -> bool {
        if self.by {
            self.names.iter().any(|n| n == name)
        } else {
            name != METRIC_NAME && !self.names.iter().any(|n| n == name)
        }
    }

    fn pairs<'a>(&'a self, labels: &'a Labels) -> impl Iterator<Item = (&'a String, &'a String)> {
        labels.iter().filter(|(k, _)| self.includes(k))
    }

    fn key(&self, labels: &Labels) -> Labels {
        self.pairs(labels)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Positions remembered by the address of a label set, for lookups repeated
/// at every step of a range query: the elements made of one series share
/// its label set across steps. The memo holds each label set it remembers,
/// so the address cannot be freed and reused by another label set while
/// the query runs.
#[derive(Default)]
struct AddressMemo {
    by_address: HashMap<usize, (Arc<Labels>, usize), std::hash::BuildHasherDefault<AddressHasher>>,
}

impl AddressMemo {
    /// How many label sets a memo remembers: beyond this, lookups go the
    /// slow way as if unremembered, so memory stays bounded.
    const LIMIT: usize = 1 << 20;

    fn get(&self, address: usize) -> Option<usize> {
        self.by_address.get(&address).map(|(_, position)| *position)
    }

    fn remember(&mut self, address: usize, labels: &Arc<Labels>, position: usize) {
        // A label set only this element holds was made for this step
        // (`label_replace`, say): remembering it would keep every step's
        // copy alive for nothing.
        if Arc::strong_count(labels) > 1 && self.by_address.len() < Self::LIMIT {
            self.by_address.insert(address, (labels.clone(), position));
        }
    }
}

/// The groups of one grouping across the steps of a query: each series'
/// group is found by hashing its grouping labels once, then by the address
/// of its label set.
#[derive(Default)]
struct GroupMemo {
    of_series: AddressMemo,
    index: LabelIndex,
    keys: Vec<Arc<Labels>>,
}

impl GroupMemo {
    fn group(&mut self, grouping: &Grouping, labels: &Arc<Labels>) -> usize {
        let address = Arc::as_ptr(labels) as usize;
        if let Some(g) = self.of_series.get(address) {
            return g;
        }
        let hash = hash_labels(grouping.pairs(labels));
        let keys = &self.keys;
        let g = match self
            .index
            .find(hash, |i| keys[i].iter().eq(grouping.pairs(labels)))
        {
            Some(g) => g,
            None => {
                self.keys.push(Arc::new(grouping.key(labels)));
                self.index.insert(hash, self.keys.len() - 1);
                self.keys.len() - 1
            }
        };
        self.of_series.remember(address, labels, g);
        g
    }
}

/// Hashes an address (the keys of [`AddressMemo`]): Fibonacci hashing spreads
/// the aligned, nearby addresses of label sets over the table.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, v: usize) {
        self.0 = (v as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// The groups of one aggregation step, in the order they first appear,
/// found through the query's [`GroupMemo`] for the grouping.
struct Groups<'g> {
    grouping: &'g Grouping,
    memo: &'g mut GroupMemo,
    /// This step's position of each group of the memo (`usize::MAX`: not
    /// seen in this step yet).
    position: Vec<usize>,
    /// The memo's group at each position.
    order: Vec<usize>,
}

impl<'g> Groups<'g> {
    fn new(grouping: &'g Grouping, memo: &'g mut GroupMemo) -> Self {
        Self {
            grouping,
            position: vec![usize::MAX; memo.keys.len()],
            memo,
            order: Vec::new(),
        }
    }

    /// The position of the group of `labels` in this step, and whether it
    /// is new.
    fn find(&mut self, labels: &Arc<Labels>) -> (usize, bool) {
        let g = self.memo.group(self.grouping, labels);
        if g >= self.position.len() {
            self.position.resize(g + 1, usize::MAX);
        }
        match self.position[g] {
            usize::MAX => {
                self.position[g] = self.order.len();
                self.order.push(g);
                (self.order.len() - 1, true)
            }
            p => (p, false),
        }
    }

    /// The grouping labels of the group at `position`.
    fn key(&self, position: usize) -> &Arc<Labels> {
        &self.memo.keys[self.order[position]]
    }
}

/// A stable hash of a label set (xxh64 of `name 0xff value 0xff ...`).
pub fn label_hash(labels: &Labels) -> u64 {
    hash_labels(labels.iter())
}

/// Orders for topk (largest first) or bottomk (smallest first); NaN last.
fn rank_cmp(a: f64, b: f64, top: bool) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => {
            if top {
                b.partial_cmp(&a).unwrap_or(Ordering::Equal)
            } else {
                a.partial_cmp(&b).unwrap_or(Ordering::Equal)
            }
        }
    }
}

/// Go's `strconv.FormatFloat(f, 'f', -1, 64)`.
pub(crate) fn format_value(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f == f64::INFINITY {
        "+Inf".into()
    } else if f == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{f}")
    }
}

pub(crate) fn valid_label_name(name: &str) -> bool {
    !name.is_empty()
}

/// Go-quoted forms (`"a\xc5z"`) of the string literals of `query` that
/// are not valid UTF-8 in Go, keyed by the value promql-parser gives them
/// (where `\xc5` became U+00C5). Prometheus rejects such label names.
fn invalid_utf8_literals(query: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut chars = query.char_indices().peekable();
    while let Some((_, q)) = chars.next() {
        if q == '`' {
            for (_, c) in chars.by_ref() {
                if c == '`' {
                    break;
                }
            }
            continue;
        }
        if q != '"' && q != '\'' {
            continue;
        }
        let mut bytes: Vec<u8> = Vec::new();
        let mut parsed = String::new();
        while let Some((_, c)) = chars.next() {
            if c == q {
                break;
            }
            if c != '\\' {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                parsed.push(c);
                continue;
            }
            let Some((_, e)) = chars.next() else { break };
            let digits =
                |n: usize,
                 radix: u32,
                 chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
                    let mut v = 0u32;
                    for _ in 0..n {
                        match chars.peek().and_then(|(_, d)| d.to_digit(radix)) {
                            Some(d) => {
                                v = v * radix + d;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    v
                };
            match e {
                'x' => {
                    let v = digits(2, 16, &mut chars);
                    bytes.push(v as u8);
                    parsed.push(char::from_u32(v).unwrap_or('?'));
                }
                '0'..='7' => {
                    let v = e.to_digit(8).unwrap_or(0) * 64 + digits(2, 8, &mut chars);
                    bytes.push(v as u8);
                    parsed.push(char::from_u32(v).unwrap_or('?'));
                }
                other => {
                    // Other escapes stand for valid characters: keep the
                    // literal only for the validity check.
                    bytes.push(b'a');
                    parsed.push(match other {
                        'n' => '\n',
                        't' => '\t',
                        _ => other,
                    });
                }
            }
        }
        if std::str::from_utf8(&bytes).is_err() {
            let mut quoted = String::from("\"");
            for chunk in bytes.utf8_chunks() {
                quoted.push_str(chunk.valid());
                for b in chunk.invalid() {
                    quoted.push_str(&format!("\\x{b:02x}"));
                }
            }
            quoted.push('"');
            out.insert(parsed, quoted);
        }
    }
    out
}

fn convert_matchers(ms: &Matchers) -> Result<Vec<LabelMatcher>, Error> {
    let mut out = Vec::with_capacity(ms.matchers.len());
    for m in &ms.matchers {
        let op = match &m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::Regex,
            PMatchOp::NotRe(_) => MatchOp::NotRegex,
        };
        out.push(LabelMatcher::new(&m.name, op, &m.value)?);
    }
    if !ms.or_matchers.is_empty() {
        return exec("'or' in label matchers is not supported");
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl BinOp {
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "+" => Self::Add,
            "-" => Self::Sub,
            "*" => Self::Mul,
            "/" => Self::Div,
            "%" => Self::Mod,
            "^" => Self::Pow,
            "atan2" => Self::Atan2,
            "==" => Self::Eq,
            "!=" => Self::Ne,
            ">" => Self::Gt,
            "<" => Self::Lt,
            ">=" => Self::Ge,
            "<=" => Self::Le,
            "and" => Self::And,
            "or" => Self::Or,
            "unless" => Self::Unless,
            other => return exec(format!("unsupported binary operator {other:?}")),
        })
    }

    fn is_comparison(self) -> bool {
        matches!(
            self,
            Self::Eq | Self::Ne | Self::Gt | Self::Lt | Self::Ge | Self::Le
        )
    }

    /// The value and whether a comparison holds (always true for arithmetic).
    fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Self::Add => (l + r, true),
            Self::Sub => (l - r, true),
            Self::Mul => (l * r, true),
            Self::Div => (l / r, true),
            Self::Mod => (l % r, true),
            Self::Pow => (l.powf(r), true),
            Self::Atan2 => (l.atan2(r), true),
            Self::Eq => (l, l == r),
            Self::Ne => (l, l != r),
            Self::Gt => (l, l > r),
            Self::Lt => (l, l < r),
            Self::Ge => (l, l >= r),
            Self::Le => (l, l <= r),
            Self::And | Self::Or | Self::Unless => (l, true),
        }
    }
}

/// Prometheus' `vectorElemBinop`: the value, histogram and whether a
/// comparison holds; None drops the element (operand types the operator
/// does not take, or histograms that cannot be combined).
fn elem_binop(
    op: BinOp,
    lf: f64,
    rf: f64,
    lh: Option<&Arc<FloatHistogram>>,
    rh: Option<&Arc<FloatHistogram>>,
) -> Option<(f64, Option<Arc<FloatHistogram>>, bool)> {
    let scaled = |h: &FloatHistogram, by: f64, div: bool| {
        let mut h = h.clone();
        if div {
            h.div(by);
        } else {
            h.mul(by);
        }
        h.compact();
        Some((0.0, Some(Arc::new(h)), true))
    };
    match (lh, rh) {
        (None, None) => {
            let (v, keep) = op.apply(lf, rf);
            Some((v, None, keep))
        }
        (None, Some(h)) => match op {
            BinOp::Mul => scaled(h, lf, false),
            _ => None,
        },
        (Some(h), None) => match op {
            BinOp::Mul => scaled(h, rf, false),
            BinOp::Div => scaled(h, rf, true),
            _ => None,
        },
        (Some(a), Some(b)) => match op {
            BinOp::Add | BinOp::Sub => {
                let mut r = (**a).clone();
                let collision = if op == BinOp::Add { r.add(b) } else { r.sub(b) };
                if collision != Ok(false) {
                    return None;
                }
                if op == BinOp::Sub {
                    r.counter_reset_hint = super::histogram::CounterResetHint::Gauge;
                }
                r.compact();
                Some((0.0, Some(Arc::new(r)), true))
            }
            BinOp::Eq => Some((0.0, Some(a.clone()), a.equals(b))),
            BinOp::Ne => Some((0.0, Some(a.clone()), !a.equals(b))),
            _ => None,
        },
    }
}

fn vector_scalar(op: BinOp, v: Vec<El>, s: f64, swap: bool, return_bool: bool) -> Vec<El> {
    let mut out = Vec::with_capacity(v.len());
    for el in v {
        let (l, r, lh, rh) = if swap {
            (s, el.f, None, el.h.as_ref())
        } else {
            (el.f, s, el.h.as_ref(), None)
        };
        let Some((mut val, mut h, keep)) = elem_binop(op, l, r, lh, rh) else {
            continue;
        };
        if op.is_comparison() {
            if return_bool {
                val = if keep { 1.0 } else { 0.0 };
                h = None;
            } else if !keep {
                continue;
            } else {
                val = el.f;
                h = el.h.clone();
            }
        }
        out.push(El {
            f: val,
            h,
            drop: el.drop || !op.is_comparison() || return_bool,
            labels: el.labels,
        });
    }
    out
}

fn set_op(op: BinOp, l: Vec<El>, r: Vec<El>, m: &Grouping) -> Vec<El> {
    // The match groups of one side, and whether an element of the other
    // side falls in one of them.
    let groups = |side: &[El]| {
        let mut index = LabelIndex::default();
        for (i, e) in side.iter().enumerate() {
            index.insert(hash_labels(m.pairs(&e.labels)), i);
        }
        index
    };
    let in_groups = |index: &LabelIndex, side: &[El], e: &El| {
        let hash = hash_labels(m.pairs(&e.labels));
        index
            .find(hash, |i| m.pairs(&side[i].labels).eq(m.pairs(&e.labels)))
            .is_some()
    };
    match op {
        BinOp::And => {
            let index = groups(&r);
            l.into_iter().filter(|e| in_groups(&index, &r, e)).collect()
        }
        BinOp::Unless => {
            let index = groups(&r);
            l.into_iter()
                .filter(|e| !in_groups(&index, &r, e))
                .collect()
        }
        _ => {
            let index = groups(&l);
            let right: Vec<El> = r
                .into_iter()
                .filter(|e| !in_groups(&index, &l, e))
                .collect();
            let mut out = l;
            out.extend(right);
            out
        }
    }
}

fn vector_vector(
    op: BinOp,
    lhs: Vec<El>,
    rhs: Vec<El>,
    card: &VectorMatchCardinality,
    m: &Grouping,
    return_bool: bool,
    fill: (Option<f64>, Option<f64>),
) -> Result<Vec<El>, Error> {
    let (swapped, include) = match card {
        VectorMatchCardinality::OneToMany(ls) => (true, ls.labels.clone()),
        VectorMatchCardinality::ManyToOne(ls) => (false, ls.labels.clone()),
        _ => (false, Vec::new()),
    };
    let one_to_one = matches!(
        card,
        VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany
    );
    let (lhs, rhs) = if swapped { (rhs, lhs) } else { (lhs, rhs) };
    // fill_left fills the "one" side's match groups that lack the other
    // side, fill_right the other way round (sides as matched, after
    // swapping for group_right).
    let (fill_lhs, fill_rhs) = fill;
    // The right side's match groups, found by a hash of their matching
    // labels; each left element looks its group up without building a key.
    let mut right_index = LabelIndex::default();
    let mut right: Vec<El> = Vec::with_capacity(rhs.len());
    for r in rhs {
        let hash = hash_labels(m.pairs(&r.labels));
        if let Some(j) =
            right_index.find(hash, |j| m.pairs(&right[j].labels).eq(m.pairs(&r.labels)))
        {
            let side = if swapped { "left" } else { "right" };
            let mut a = DisplayLabels(&r.labels).to_string();
            let mut b = DisplayLabels(&right[j].labels).to_string();
            if a > b {
                std::mem::swap(&mut a, &mut b);
            }
            return exec(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{a}, {b}];many-to-many matching not allowed: matching labels must be unique on one side",
                DisplayLabels(&m.key(&r.labels))
            ));
        }
        right_index.insert(hash, right.len());
        right.push(r);
    }
    let no_labels: Arc<Labels> = Arc::default();
    // Per right match group: the output label sets it produced so far.
    let mut matched: Vec<Option<(LabelIndex, Vec<Arc<Labels>>)>> =
        std::iter::repeat_with(|| None).take(right.len()).collect();
    let mut out = Vec::new();
    for l in lhs {
        let hash = hash_labels(m.pairs(&l.labels));
        let group = right_index.find(hash, |j| m.pairs(&right[j].labels).eq(m.pairs(&l.labels)));
        let (rf, rh, rlabels) = match group {
            Some(j) => (right[j].f, right[j].h.as_ref(), &right[j].labels),
            None => match fill_rhs {
                Some(f) => (f, None, &no_labels),
                None => continue,
            },
        };
        let (fl, fr, hl, hr) = if swapped {
            (rf, l.f, rh, l.h.as_ref())
        } else {
            (l.f, rf, l.h.as_ref(), rh)
        };
        let Some((mut val, mut h, keep)) = elem_binop(op, fl, fr, hl, hr) else {
            continue;
        };
        if return_bool {
            h = None;
            if op.is_comparison() {
                val = if keep { 1.0 } else { 0.0 };
            }
        }
        let mut labels = l.labels.clone();
        if one_to_one {
            let keep = |k: &String| m.by == m.names.iter().any(|n| n == k);
            if !labels.keys().all(keep) {
                Arc::make_mut(&mut labels).retain(|k, _| keep(k));
            }
        }
        for name in &include {
            match rlabels.get(name) {
                Some(v) if !v.is_empty() => {
                    if labels.get(name) != Some(v) {
                        Arc::make_mut(&mut labels).insert(name.clone(), v.clone());
                    }
                }
                _ => {
                    if labels.contains_key(name) {
                        Arc::make_mut(&mut labels).remove(name);
                    }
                }
            }
        }
        // A filled element (no match) has nothing to check.
        if let Some(j) = group {
            let (index, outputs) = matched[j].get_or_insert_with(Default::default);
            if one_to_one && !outputs.is_empty() {
                return exec(
                    "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)",
                );
            }
            let hash = hash_labels(labels.iter());
            if index.find(hash, |i| outputs[i] == labels).is_some() {
                return exec(
                    "multiple matches for labels: grouping labels must ensure unique matches",
                );
            }
            index.insert(hash, outputs.len());
            outputs.push(labels.clone());
        }
        if op.is_comparison() && !return_bool && !keep {
            continue;
        }
        let drop = if op.is_comparison() && !return_bool {
            l.drop
        } else {
            true
        };
        out.push(El {
            labels,
            f: val,
            h,
            drop,
        });
    }
    if let Some(f) = fill_lhs {
        // Match groups of the right side without a left side: one element
        // with the group's labels.
        for (r, matched) in right.iter().zip(&matched) {
            if matched.is_some() {
                continue;
            }
            let (fl, fr, hl, hr) = if swapped {
                (r.f, f, r.h.as_ref(), None)
            } else {
                (f, r.f, None, r.h.as_ref())
            };
            let Some((mut val, mut h, keep)) = elem_binop(op, fl, fr, hl, hr) else {
                continue;
            };
            if op.is_comparison() {
                if return_bool {
                    val = if keep { 1.0 } else { 0.0 };
                    h = None;
                } else if !keep {
                    continue;
                }
            }
            out.push(El {
                labels: Arc::new(m.key(&r.labels)),
                f: val,
                h,
                drop: true,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::promql::{MemorySource, stale_nan};

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn source() -> MemorySource {
        let src = MemorySource::new();
        let a = labels(&[("__name__", "c"), ("job", "a")]);
        let b = labels(&[("__name__", "c"), ("job", "b")]);
        for i in 0..10 {
            src.append(&a, i * 60_000, i as f64);
            src.append(&b, i * 60_000, 10.0 * i as f64);
        }
        src.append(&a, 10 * 60_000, stale_nan());
        src
    }

    fn vector(v: Value) -> Vec<Sample> {
        match v {
            Value::Vector(v) => v,
            other => panic!("not a vector: {other:?}"),
        }
    }

    #[test]
    fn staleness_and_lookback() {
        let src = source();
        let e = Engine::default();
        // At 10m the marker hides job=a; job=b is still within 5m lookback.
        let v = vector(e.instant_query(&src, "c", 600_000).expect("query"));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].labels.get("job").map(String::as_str), Some("b"));
        // Lookback is left-open: 9m + 5m exactly is out.
        let v = vector(
            e.instant_query(&src, "c", 540_000 + 300_000)
                .expect("query"),
        );
        assert!(v.is_empty());
        // Negative offset looks ahead.
        let v = vector(
            e.instant_query(&src, "c{job=\"a\"} offset -2m", 0)
                .expect("query"),
        );
        assert_eq!(v[0].f, 2.0);
    }

    #[test]
    fn rate_sum_and_name_dropping() {
        let src = source();
        let e = Engine::default();
        let v = vector(
            e.instant_query(&src, "sum by (job) (rate(c[5m]))", 540_000)
                .expect("query"),
        );
        let b = v
            .iter()
            .find(|s| s.labels.get("job").map(String::as_str) == Some("b"))
            .expect("job b");
        assert!((b.f - 10.0 / 60.0).abs() < 1e-9, "{}", b.f);
        let v = vector(e.instant_query(&src, "c * 2", 60_000).expect("query"));
        assert!(v.iter().all(|s| !s.labels.contains_key("__name__")));
        let v = vector(e.instant_query(&src, "c > 5", 60_000).expect("query"));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].labels.get("__name__").map(String::as_str), Some("c"));
    }

    #[test]
    fn lookup_cursor_moves_both_ways() {
        let fetched = Fetched::from(MixedSeries {
            labels: labels(&[("__name__", "c")]),
            samples: (0..100).map(|i| (i * 10, i as f64)).collect(),
            histograms: Vec::new(),
        });
        let binary = |t: i64| fetched.samples.partition_point(|p| p.0 <= t);
        // Forward in small and large steps, back, before the first sample
        // and past the last.
        for t in [5, 15, 25, 600, 610, 990, 2000, 300, -1, 0, 455, 460, 1000] {
            assert_eq!(fetched.count_until(t), binary(t), "at {t}");
        }
    }

    #[test]
    fn aggregation_groups_stay_right_across_steps() {
        let src = source();
        let engine = Engine::default();
        // Both aggregations group by `job` and so share the group memo;
        // `label_replace` makes new label sets at every step, which must
        // not be taken for the series' own.
        let q = r#"sum by (job) (c) + on (job) count by (job) (label_replace(c, "x", "$1", "job", "(.*)"))"#;
        let out = engine.range_query(&src, q, 0, 9 * 60_000, 60_000).unwrap();
        let by_labels: HashMap<String, Vec<(i64, f64)>> = out
            .into_iter()
            .map(|s| (DisplayLabels(&s.labels).to_string(), s.points))
            .collect();
        let steps =
            |f: &dyn Fn(i64) -> f64| (0..10).map(|i| (i * 60_000, f(i))).collect::<Vec<_>>();
        assert_eq!(by_labels[r#"{job="a"}"#], steps(&|i| i as f64 + 1.0));
        assert_eq!(by_labels[r#"{job="b"}"#], steps(&|i| 10.0 * i as f64 + 1.0));
        assert_eq!(by_labels.len(), 2);
    }

    #[test]
    fn range_query_steps_and_errors() {
        let src = source();
        let e = Engine::default();
        let m = e
            .range_query(&src, "c{job=\"a\"} + 1", 0, 180_000, 60_000)
            .expect("query");
        assert_eq!(m.len(), 1);
        assert_eq!(
            m[0].points,
            vec![(0, 1.0), (60_000, 2.0), (120_000, 3.0), (180_000, 4.0)]
        );
        assert!(matches!(
            e.range_query(&src, "c[5m]", 0, 60_000, 60_000),
            Err(Error::Parse(_))
        ));
        assert!(matches!(
            e.range_query(&src, "c", 0, 60_000, 0),
            Err(Error::Parse(_))
        ));
        assert!(matches!(
            e.instant_query(&src, "sum(", 0),
            Err(Error::Parse(_))
        ));
        assert!(matches!(
            e.range_query(&src, "c", 0, 11_001_000, 1_000),
            Err(Error::Parse(_))
        ));
        let small = Engine {
            max_samples: 5,
            ..Engine::default()
        };
        assert!(
            small
                .instant_query(&src, "c{job=\"a\"}[3m]", 300_000)
                .is_ok()
        );
        let err = small
            .instant_query(&src, "c[10m]", 540_000)
            .expect_err("too many samples");
        assert!(err.to_string().contains("too many samples"), "{err}");
        let err = e
            .instant_query(&src, "c + on() c", 60_000)
            .expect_err("duplicate match group");
        assert!(
            err.to_string().starts_with("found duplicate series"),
            "{err}"
        );
    }
}
