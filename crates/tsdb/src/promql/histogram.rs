//! Native histograms as PromQL sees them: Prometheus' `FloatHistogram`
//! (exponential schemas -4..8 and custom buckets, schema -53).
//!
//! Buckets are kept as a sorted map from bucket index to count rather
//! than spans plus buckets; explicit empty buckets are kept as loaded, and
//! [`FloatHistogram::compact`] removes them. [`FloatHistogram::spans`] and
//! [`FloatHistogram::from_spans`] convert to and from the span layout.

use std::collections::BTreeMap;
use std::fmt;

/// The schema of histograms with custom bucket bounds (NHCB).
pub const CUSTOM_BUCKETS_SCHEMA: i32 = -53;

/// What a histogram says about counter resets since the previous sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CounterResetHint {
    #[default]
    Unknown,
    CounterReset,
    NotCounterReset,
    Gauge,
}

/// A span of consecutive buckets: `offset` from the end of the previous
/// span (from index 0 for the first), `length` buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: i32,
    pub length: u32,
}

/// A native histogram with float counts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FloatHistogram {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    pub count: f64,
    pub sum: f64,
    /// Positive buckets by index (bucket `i` has upper bound `bound(i)`).
    pub positive: BTreeMap<i32, f64>,
    /// Negative buckets by index (bucket `i` spans `[-bound(i), -bound(i-1))`).
    pub negative: BTreeMap<i32, f64>,
    /// Upper bounds of the custom buckets (without the last, +Inf).
    pub custom_values: Vec<f64>,
    pub counter_reset_hint: CounterResetHint,
}

/// Adding or subtracting an exponential and a custom-buckets histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncompatibleSchema;

/// One bucket with its bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub lower: f64,
    pub upper: f64,
    pub lower_inclusive: bool,
    pub upper_inclusive: bool,
    pub count: f64,
    pub index: i32,
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{},{}{}:{}",
            if self.lower_inclusive { '[' } else { '(' },
            go_g(self.lower),
            go_g(self.upper),
            if self.upper_inclusive { ']' } else { ')' },
            go_g(self.count)
        )
    }
}

/// Go's `%g`/`%v` for a float (shortest representation).
pub(crate) fn go_g(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let exp = f.abs().log10().floor() as i32;
    if !(-4..21).contains(&exp) {
        // Go switches to exponent notation: 1e+21, 1e-05.
        let s = format!("{f:e}");
        let (mant, e) = s.split_once('e').unwrap_or((&s, "0"));
        let e: i32 = e.parse().unwrap_or(0);
        let sign = if e < 0 { '-' } else { '+' };
        return format!("{mant}e{sign}{:02}", e.abs());
    }
    format!("{f}")
}

/// The upper bound of bucket `idx` in an exponential `schema`.
fn exp_bound(idx: i32, schema: i32) -> f64 {
    if schema < 0 {
        let exp = i64::from(idx) << -schema;
        if exp == 1024 {
            return f64::MAX;
        }
        return 2f64.powi(exp.clamp(-2000, 2000) as i32);
    }
    let frac_idx = idx & ((1 << schema) - 1);
    let frac = 2f64.powf(f64::from(frac_idx) / f64::from(1 << schema) - 1.0);
    let exp = (idx >> schema) + 1;
    if frac == 0.5 && exp == 1025 {
        return f64::MAX;
    }
    frac * 2f64.powi(exp)
}

fn target_idx(idx: i32, origin: i32, target: i32) -> i32 {
    ((idx - 1) >> (origin - target)) + 1
}

fn buckets_equal(a: &BTreeMap<i32, f64>, b: &BTreeMap<i32, f64>) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((i, x), (j, y))| i == j && x.to_bits() == y.to_bits())
}

impl FloatHistogram {
    pub fn uses_custom_buckets(&self) -> bool {
        self.schema == CUSTOM_BUCKETS_SCHEMA
    }

    /// Builds a histogram from Prometheus' span layout.
    #[allow(clippy::too_many_arguments)]
    pub fn from_spans(
        schema: i32,
        zero_threshold: f64,
        zero_count: f64,
        count: f64,
        sum: f64,
        positive: (&[Span], &[f64]),
        negative: (&[Span], &[f64]),
        custom_values: Vec<f64>,
    ) -> Self {
        fn expand(spans: &[Span], buckets: &[f64]) -> BTreeMap<i32, f64> {
            let mut out = BTreeMap::new();
            let mut idx = 0i32;
            let mut it = buckets.iter();
            for (n, s) in spans.iter().enumerate() {
                idx += s.offset;
                if n > 0 || s.length > 0 {
                    for _ in 0..s.length {
                        if let Some(&c) = it.next() {
                            out.insert(idx, c);
                        }
                        idx += 1;
                    }
                }
            }
            out
        }
        Self {
            schema,
            zero_threshold,
            zero_count,
            count,
            sum,
            positive: expand(positive.0, positive.1),
            negative: expand(negative.0, negative.1),
            custom_values,
            counter_reset_hint: CounterResetHint::Unknown,
        }
    }

    /// The positive or negative buckets in Prometheus' span layout.
    pub fn spans(&self, positive: bool) -> (Vec<Span>, Vec<f64>) {
        let map = if positive {
            &self.positive
        } else {
            &self.negative
        };
        let mut spans: Vec<Span> = Vec::new();
        let mut buckets = Vec::with_capacity(map.len());
        let mut next: Option<i32> = None;
        for (&i, &c) in map {
            match next {
                Some(n) if n == i => {
                    if let Some(last) = spans.last_mut() {
                        last.length += 1;
                    }
                }
                Some(n) => spans.push(Span {
                    offset: i - n,
                    length: 1,
                }),
                None => spans.push(Span {
                    offset: i,
                    length: 1,
                }),
            }
            buckets.push(c);
            next = Some(i + 1);
        }
        (spans, buckets)
    }

    fn bound(&self, idx: i32) -> f64 {
        if self.uses_custom_buckets() {
            let len = self.custom_values.len() as i32;
            if idx >= len {
                f64::INFINITY
            } else if idx < 0 {
                f64::NEG_INFINITY
            } else {
                self.custom_values[idx as usize]
            }
        } else {
            exp_bound(idx, self.schema)
        }
    }

    fn bucket(&self, idx: i32, count: f64, positive: bool) -> Bucket {
        let (lower, upper) = if positive {
            (self.bound(idx - 1), self.bound(idx))
        } else {
            (-self.bound(idx), -self.bound(idx - 1))
        };
        let (lower_inclusive, upper_inclusive) = if self.uses_custom_buckets() {
            (idx == 0, true)
        } else {
            (lower < 0.0, upper > 0.0)
        };
        Bucket {
            lower,
            upper,
            lower_inclusive,
            upper_inclusive,
            count,
            index: idx,
        }
    }

    fn zero_bucket(&self) -> Bucket {
        Bucket {
            lower: -self.zero_threshold,
            upper: self.zero_threshold,
            lower_inclusive: true,
            upper_inclusive: true,
            count: self.zero_count,
            index: 0,
        }
    }

    /// Every bucket from the lowest to the highest value: negative buckets,
    /// the zero bucket (when populated), positive buckets. Bounds inside
    /// the zero bucket are clamped to its threshold.
    pub fn all_buckets(&self) -> Vec<Bucket> {
        let mut out = Vec::with_capacity(self.positive.len() + self.negative.len() + 1);
        let zt = self.zero_threshold;
        let clamp = |mut b: Bucket| {
            if b.upper < 0.0 && b.upper > -zt {
                b.upper = -zt;
            } else if b.lower > 0.0 && b.lower < zt {
                b.lower = zt;
            }
            b
        };
        for (&i, &c) in self.negative.iter().rev() {
            out.push(clamp(self.bucket(i, c, false)));
        }
        if self.zero_count > 0.0 {
            out.push(self.zero_bucket());
        }
        for (&i, &c) in &self.positive {
            out.push(clamp(self.bucket(i, c, true)));
        }
        out
    }

    /// Multiplies counts and sum by `factor`.
    pub fn mul(&mut self, factor: f64) -> &mut Self {
        self.zero_count *= factor;
        self.count *= factor;
        self.sum *= factor;
        self.positive.values_mut().for_each(|c| *c *= factor);
        self.negative.values_mut().for_each(|c| *c *= factor);
        if factor < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
        self
    }

    /// Divides counts and sum by `d`; dividing by zero removes the buckets.
    pub fn div(&mut self, d: f64) -> &mut Self {
        self.zero_count /= d;
        self.count /= d;
        self.sum /= d;
        if d == 0.0 {
            self.positive.clear();
            self.negative.clear();
            return self;
        }
        self.positive.values_mut().for_each(|c| *c /= d);
        self.negative.values_mut().for_each(|c| *c /= d);
        if d < 0.0 {
            self.counter_reset_hint = CounterResetHint::Gauge;
        }
        self
    }

    /// Removes empty buckets.
    pub fn compact(&mut self) -> &mut Self {
        self.positive.retain(|_, c| *c != 0.0);
        self.negative.retain(|_, c| *c != 0.0);
        self
    }

    /// Exact equality (bit patterns), as the `==` operator uses it.
    pub fn equals(&self, o: &Self) -> bool {
        if self.schema != o.schema
            || self.count.to_bits() != o.count.to_bits()
            || self.sum.to_bits() != o.sum.to_bits()
        {
            return false;
        }
        if self.uses_custom_buckets() {
            if self.custom_values != o.custom_values {
                return false;
            }
        } else if self.zero_threshold != o.zero_threshold
            || self.zero_count.to_bits() != o.zero_count.to_bits()
            || !buckets_equal(&self.negative, &o.negative)
        {
            return false;
        }
        buckets_equal(&self.positive, &o.positive)
    }

    /// A copy with buckets merged down to `schema` (not above the current).
    pub fn copy_to_schema(&self, schema: i32) -> Self {
        let mut h = self.clone();
        if !h.uses_custom_buckets() && schema < h.schema {
            h.reduce_resolution(schema);
        }
        h
    }

    fn reduce_resolution(&mut self, target: i32) {
        let from = self.schema;
        let merge = |m: &BTreeMap<i32, f64>| {
            let mut out = BTreeMap::new();
            for (&i, &c) in m {
                *out.entry(target_idx(i, from, target)).or_insert(0.0) += c;
            }
            out
        };
        self.positive = merge(&self.positive);
        self.negative = merge(&self.negative);
        self.schema = target;
    }

    /// The zero count this histogram would have with a zero bucket of at
    /// least `larger`, and the threshold actually needed (moved up to a
    /// bucket boundary when `larger` falls inside a populated bucket).
    fn zero_count_for_larger_threshold(&self, mut larger: f64) -> (f64, f64) {
        if larger == self.zero_threshold {
            return (self.zero_count, larger);
        }
        'outer: loop {
            let mut zc = self.zero_count;
            for (&i, &c) in &self.positive {
                let b = self.bucket(i, c, true);
                if b.lower >= larger {
                    break;
                }
                zc += c;
                if b.upper > larger {
                    if c != 0.0 {
                        larger = b.upper;
                    }
                    break;
                }
            }
            for (&i, &c) in &self.negative {
                let b = self.bucket(i, c, false);
                if b.upper <= -larger {
                    break;
                }
                zc += c;
                if b.lower < -larger {
                    if c != 0.0 {
                        larger = -b.lower;
                        continue 'outer;
                    }
                    break;
                }
            }
            return (zc, larger);
        }
    }

    fn trim_buckets_in_zero_bucket(&mut self) {
        let zt = self.zero_threshold;
        let keep_pos: Vec<i32> = self
            .positive
            .keys()
            .copied()
            .filter(|&i| self.bound(i - 1) < zt)
            .collect();
        for i in keep_pos {
            self.positive.remove(&i);
        }
        let keep_neg: Vec<i32> = self
            .negative
            .keys()
            .copied()
            .filter(|&i| self.bound(i - 1) < zt)
            .collect();
        for i in keep_neg {
            self.negative.remove(&i);
        }
    }

    /// Widens the zero buckets of `self` to cover both; returns the zero
    /// count `other` has for the common threshold.
    fn reconcile_zero_buckets(&mut self, other: &Self) -> f64 {
        let mut other_count = other.zero_count;
        let mut other_threshold = other.zero_threshold;
        while other_threshold != self.zero_threshold {
            if self.zero_threshold > other_threshold {
                (other_count, other_threshold) =
                    other.zero_count_for_larger_threshold(self.zero_threshold);
            }
            if other_threshold > self.zero_threshold {
                let (zc, zt) = self.zero_count_for_larger_threshold(other_threshold);
                self.zero_count = zc;
                self.zero_threshold = zt;
                self.trim_buckets_in_zero_bucket();
            }
        }
        other_count
    }

    /// Sets the hint for the sum or difference with `other`; true on a
    /// collision of CounterReset and NotCounterReset.
    fn adjust_counter_reset(&mut self, other: &Self) -> bool {
        use CounterResetHint::*;
        match (self.counter_reset_hint, other.counter_reset_hint) {
            (a, b) if a == b => false,
            (Gauge, _) => false,
            (_, Gauge) => {
                self.counter_reset_hint = Gauge;
                false
            }
            (Unknown, _) => false,
            (_, Unknown) => {
                self.counter_reset_hint = Unknown;
                false
            }
            _ => {
                self.counter_reset_hint = Unknown;
                true
            }
        }
    }

    /// Adds `other`; returns whether counter reset hints collided.
    pub fn add(&mut self, other: &Self) -> Result<bool, IncompatibleSchema> {
        self.combine(other, 1.0)
    }

    /// Subtracts `other`; returns whether counter reset hints collided.
    pub fn sub(&mut self, other: &Self) -> Result<bool, IncompatibleSchema> {
        self.combine(other, -1.0)
    }

    fn combine(&mut self, other: &Self, sign: f64) -> Result<bool, IncompatibleSchema> {
        if self.uses_custom_buckets() != other.uses_custom_buckets() {
            return Err(IncompatibleSchema);
        }
        let collision = self.adjust_counter_reset(other);
        self.count += sign * other.count;
        self.sum += sign * other.sum;
        if self.uses_custom_buckets() {
            if self.custom_values == other.custom_values {
                for (&i, &c) in &other.positive {
                    *self.positive.entry(i).or_insert(0.0) += sign * c;
                }
            } else {
                let bounds = intersect(&self.custom_values, &other.custom_values);
                let mut out = BTreeMap::new();
                map_custom(&self.positive, &self.custom_values, &bounds, 1.0, &mut out);
                map_custom(
                    &other.positive,
                    &other.custom_values,
                    &bounds,
                    sign,
                    &mut out,
                );
                out.retain(|_, c| *c != 0.0);
                self.positive = out;
                self.custom_values = bounds;
            }
            return Ok(collision);
        }
        let other_zero = self.reconcile_zero_buckets(other);
        self.zero_count += sign * other_zero;
        let other = if other.schema > self.schema {
            other.copy_to_schema(self.schema)
        } else {
            if other.schema < self.schema {
                self.reduce_resolution(other.schema);
            }
            other.clone()
        };
        let zt = self.zero_threshold;
        for (&i, &c) in &other.positive {
            if other.bound(i) <= zt {
                continue;
            }
            *self.positive.entry(i).or_insert(0.0) += sign * c;
        }
        for (&i, &c) in &other.negative {
            if other.bound(i) <= zt {
                continue;
            }
            *self.negative.entry(i).or_insert(0.0) += sign * c;
        }
        Ok(collision)
    }

    /// True when `self` follows `previous` only after a counter reset.
    pub fn detect_reset(&self, previous: &Self) -> bool {
        match self.counter_reset_hint {
            CounterResetHint::CounterReset => return true,
            CounterResetHint::NotCounterReset => return false,
            _ => {}
        }
        if self.count < previous.count {
            return true;
        }
        if self.uses_custom_buckets() {
            if !previous.uses_custom_buckets() {
                return true;
            }
            if self.custom_values != previous.custom_values {
                let bounds = intersect(&self.custom_values, &previous.custom_values);
                let mut cur = BTreeMap::new();
                let mut prev = BTreeMap::new();
                map_custom(&self.positive, &self.custom_values, &bounds, 1.0, &mut cur);
                map_custom(
                    &previous.positive,
                    &previous.custom_values,
                    &bounds,
                    1.0,
                    &mut prev,
                );
                return prev
                    .iter()
                    .any(|(i, p)| cur.get(i).copied().unwrap_or(0.0) < *p);
            }
        } else if previous.uses_custom_buckets() {
            return true;
        }
        if self.schema > previous.schema {
            return true;
        }
        if self.zero_threshold < previous.zero_threshold {
            return true;
        }
        let (prev_zero, threshold) = previous.zero_count_for_larger_threshold(self.zero_threshold);
        if threshold != self.zero_threshold {
            return true;
        }
        if self.zero_count < prev_zero {
            return true;
        }
        let prev = previous.copy_to_schema(self.schema);
        let zt = self.zero_threshold;
        let reset = |cur: &BTreeMap<i32, f64>, old: &BTreeMap<i32, f64>| {
            old.iter().any(|(i, &p)| {
                if !prev.uses_custom_buckets() && prev.bound(*i) <= zt {
                    return false;
                }
                cur.get(i).copied().unwrap_or(0.0) < p
            })
        };
        reset(&self.positive, &prev.positive) || reset(&self.negative, &prev.negative)
    }

    /// The estimated `q` quantile.
    pub fn quantile(&self, q: f64) -> f64 {
        if q < 0.0 {
            return f64::NEG_INFINITY;
        }
        if q > 1.0 {
            return f64::INFINITY;
        }
        if self.count == 0.0 || q.is_nan() {
            return f64::NAN;
        }
        let forward = self.sum.is_nan() || q < 0.5;
        let mut buckets = self.all_buckets();
        let mut rank = if forward {
            q * self.count
        } else {
            buckets.reverse();
            (1.0 - q) * self.count
        };
        let mut count = 0.0;
        let mut bucket = None;
        let mut pos = 0;
        for (i, b) in buckets.iter().enumerate() {
            bucket = Some(*b);
            pos = i;
            if b.count == 0.0 {
                continue;
            }
            count += b.count;
            if count >= rank {
                break;
            }
        }
        let Some(mut bucket) = bucket else {
            return f64::NAN;
        };
        if !self.uses_custom_buckets() && bucket.lower < 0.0 && bucket.upper > 0.0 {
            if self.negative.is_empty() && !self.positive.is_empty() {
                bucket.lower = 0.0;
            } else if self.positive.is_empty() && !self.negative.is_empty() {
                bucket.upper = 0.0;
            }
        } else if self.uses_custom_buckets() {
            if bucket.lower == f64::NEG_INFINITY {
                if bucket.upper <= 0.0 {
                    return bucket.upper;
                }
                bucket.lower = 0.0;
            } else if bucket.upper == f64::INFINITY {
                return bucket.lower;
            }
        }
        if count > self.count {
            count = self.count;
        }
        if count < rank {
            if self.sum.is_nan() {
                return f64::NAN;
            }
            return bucket.upper;
        }
        let _ = pos;
        if forward {
            rank -= count - bucket.count;
        } else {
            rank = count - rank;
        }
        let fraction = rank / bucket.count;
        if self.uses_custom_buckets() || (bucket.lower <= 0.0 && bucket.upper >= 0.0) {
            return bucket.lower + (bucket.upper - bucket.lower) * fraction;
        }
        let log_lower = bucket.lower.abs().log2();
        let log_upper = bucket.upper.abs().log2();
        if bucket.lower > 0.0 {
            return (log_lower + (log_upper - log_lower) * fraction).exp2();
        }
        -(log_upper + (log_lower - log_upper) * (1.0 - fraction)).exp2()
    }

    /// The estimated fraction of observations between `lower` and `upper`.
    pub fn fraction(&self, lower: f64, upper: f64) -> f64 {
        if self.count == 0.0 || lower.is_nan() || upper.is_nan() {
            return f64::NAN;
        }
        if lower >= upper {
            return 0.0;
        }
        let (mut count, mut rank, mut lower_rank, mut upper_rank) = (0.0, 0.0, 0.0, 0.0);
        let (mut lower_set, mut upper_set) = (false, false);
        let buckets = self.all_buckets();
        let mut rest = buckets.iter();
        for b in rest.by_ref() {
            let mut b = *b;
            count += b.count;
            let mut zero_bucket = false;
            if b.lower <= 0.0 && b.upper >= 0.0 {
                zero_bucket = true;
                if self.negative.is_empty() && !self.positive.is_empty() {
                    b.lower = 0.0;
                } else if self.positive.is_empty() && !self.negative.is_empty() {
                    b.upper = 0.0;
                }
            }
            let linear = self.uses_custom_buckets() || zero_bucket;
            let interpolate = |v: f64| -> f64 {
                if linear {
                    if b.lower == f64::NEG_INFINITY {
                        return b.count;
                    }
                    rank + b.count * (v - b.lower) / (b.upper - b.lower)
                } else {
                    let ll = b.lower.abs().log2();
                    let lu = b.upper.abs().log2();
                    let lv = v.abs().log2();
                    let f = if v > 0.0 {
                        (lv - ll) / (lu - ll)
                    } else {
                        1.0 - ((lv - lu) / (ll - lu))
                    };
                    rank + b.count * f
                }
            };
            if !lower_set && b.lower >= lower {
                lower_rank = rank;
                lower_set = true;
            }
            if !upper_set && b.lower >= upper {
                upper_rank = rank;
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            if !lower_set && b.lower < lower && b.upper > lower {
                lower_rank = interpolate(lower);
                lower_set = true;
            }
            if !upper_set && b.lower < upper && b.upper > upper {
                upper_rank = interpolate(upper);
                upper_set = true;
            }
            if lower_set && upper_set {
                break;
            }
            rank += b.count;
        }
        if self.sum.is_nan() {
            for b in rest {
                count += b.count;
            }
        } else {
            count = self.count;
        }
        if !lower_set || lower_rank > count {
            lower_rank = count;
        }
        if !upper_set || upper_rank > count {
            upper_rank = count;
        }
        (upper_rank - lower_rank) / self.count
    }

    /// The estimated variance of the observations.
    pub fn variance(&self) -> f64 {
        let mean = self.sum / self.count;
        let (mut var, mut c) = (0.0, 0.0);
        for b in self.all_buckets() {
            if b.count == 0.0 {
                continue;
            }
            let val = if self.uses_custom_buckets() {
                (b.upper + b.lower) / 2.0
            } else if b.lower <= 0.0 && b.upper >= 0.0 {
                0.0
            } else {
                let v = (b.upper * b.lower).sqrt();
                if b.upper < 0.0 { -v } else { v }
            };
            let delta = val - mean;
            (var, c) = super::functions::kahan_inc(b.count * delta * delta, var, c);
        }
        (var + c) / self.count
    }

    /// True when count, sum or zero count overflowed.
    pub fn has_overflow(&self) -> bool {
        self.count.is_infinite()
            || self.sum.is_infinite()
            || self.zero_count.is_infinite()
            || self.positive.values().any(|c| c.is_infinite())
            || self.negative.values().any(|c| c.is_infinite())
    }

    /// The histogram in promqltest notation (`{{schema:1 count:3 ...}}`).
    pub fn test_expression(&self) -> String {
        let mut h = self.clone();
        h.compact();
        let mut res = Vec::new();
        if h.schema != 0 {
            res.push(format!("schema:{}", h.schema));
        }
        if h.count != 0.0 {
            res.push(format!("count:{}", go_g(h.count)));
        }
        if h.sum != 0.0 {
            res.push(format!("sum:{}", go_g(h.sum)));
        }
        if h.zero_count != 0.0 {
            res.push(format!("z_bucket:{}", go_g(h.zero_count)));
        }
        if h.zero_threshold != 0.0 {
            res.push(format!("z_bucket_w:{}", go_g(h.zero_threshold)));
        }
        if h.uses_custom_buckets() {
            let v: Vec<String> = h.custom_values.iter().map(|f| go_g(*f)).collect();
            res.push(format!("custom_values:[{}]", v.join(" ")));
        }
        match h.counter_reset_hint {
            CounterResetHint::Unknown => {}
            CounterResetHint::CounterReset => res.push("counter_reset_hint:reset".into()),
            CounterResetHint::NotCounterReset => res.push("counter_reset_hint:not_reset".into()),
            CounterResetHint::Gauge => res.push("counter_reset_hint:gauge".into()),
        }
        for (map, bkey, okey) in [
            (&h.positive, "buckets", "offset"),
            (&h.negative, "n_buckets", "n_offset"),
        ] {
            let Some((&first, _)) = map.iter().next() else {
                continue;
            };
            let Some((&last, _)) = map.iter().next_back() else {
                continue;
            };
            if first != 0 {
                res.push(format!("{okey}:{first}"));
            }
            let v: Vec<String> = (first..=last)
                .map(|i| go_g(map.get(&i).copied().unwrap_or(0.0)))
                .collect();
            res.push(format!("{bkey}:[{}]", v.join(" ")));
        }
        format!("{{{{{}}}}}", res.join(" "))
    }
}

fn intersect(a: &[f64], b: &[f64]) -> Vec<f64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            out.push(a[i]);
            i += 1;
            j += 1;
        } else if a[i] < b[j] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Adds `sign *` the custom buckets `m` (with `bounds`) to `out`, mapped
/// onto the coarser bounds `target`.
fn map_custom(
    m: &BTreeMap<i32, f64>,
    bounds: &[f64],
    target: &[f64],
    sign: f64,
    out: &mut BTreeMap<i32, f64>,
) {
    for (&i, &c) in m {
        let t = match usize::try_from(i).ok().and_then(|i| bounds.get(i)) {
            Some(&b) => target.partition_point(|&x| x < b) as i32,
            None => target.len() as i32,
        };
        *out.entry(t).or_insert(0.0) += sign * c;
    }
}

impl fmt::Display for FloatHistogram {
    /// Prometheus' `String()`: `{count:2, sum:3, [-2,-1):1, (0.5,1]:1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{count:{}, sum:{}", go_g(self.count), go_g(self.sum))?;
        for (&i, &c) in self.negative.iter().rev() {
            if c != 0.0 {
                write!(f, ", {}", self.bucket(i, c, false))?;
            }
        }
        if self.zero_count != 0.0 {
            write!(f, ", {}", self.zero_bucket())?;
        }
        for (&i, &c) in &self.positive {
            if c != 0.0 {
                write!(f, ", {}", self.bucket(i, c, true))?;
            }
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(schema: i32, pos: &[(i32, f64)], neg: &[(i32, f64)], zc: f64, zt: f64) -> FloatHistogram {
        let count = pos.iter().chain(neg).map(|x| x.1).sum::<f64>() + zc;
        FloatHistogram {
            schema,
            zero_threshold: zt,
            zero_count: zc,
            count,
            sum: 10.0,
            positive: pos.iter().copied().collect(),
            negative: neg.iter().copied().collect(),
            ..Default::default()
        }
    }

    #[test]
    fn displays_like_prometheus() {
        let x = h(0, &[(0, 1.0), (1, 2.0)], &[(0, 1.0), (1, 2.0)], 2.0, 0.001);
        assert_eq!(
            x.to_string(),
            "{count:8, sum:10, [-2,-1):2, [-1,-0.5):1, [-0.001,0.001]:2, (0.5,1]:1, (1,2]:2}"
        );
        assert_eq!(go_g(1e21), "1e+21");
        assert_eq!(go_g(0.0001), "0.0001");
        assert_eq!(go_g(0.00001), "1e-05");
    }

    #[test]
    fn adds_across_schemas_and_detects_resets() {
        let mut a = h(1, &[(1, 1.0), (2, 1.0)], &[], 0.0, 0.0);
        let b = h(0, &[(1, 3.0)], &[], 0.0, 0.0);
        a.add(&b).expect("compatible");
        assert_eq!(a.schema, 0);
        assert_eq!(a.positive.get(&1), Some(&5.0));
        assert!(b.detect_reset(&a));
        assert!(!a.detect_reset(&b));
        let spans = a.spans(true);
        assert_eq!(
            spans.0,
            vec![Span {
                offset: 1,
                length: 1
            }]
        );
    }

    #[test]
    fn quantiles_and_fractions() {
        let x = h(0, &[(0, 1.0), (1, 1.0)], &[], 0.0, 0.0);
        assert!((x.quantile(0.5) - 1.0).abs() < 1e-9);
        assert!((x.fraction(0.0, 1.0) - 0.5).abs() < 1e-9);
        assert!(x.quantile(2.0).is_infinite());
    }
}
