//! The per-line label set: stream labels, structured metadata and parsed
//! labels, kept apart so that name clashes resolve like Loki's and so that
//! the result can say which labels came from where.

use std::collections::HashMap;
use std::sync::Arc;

use lucia_common::labels::Labels;

/// `__error__`.
pub const ERROR_LABEL: &str = "__error__";
/// `__error_details__`.
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";
/// Suffix of a label that lost its name to a higher-precedence source.
pub const DUPLICATE_SUFFIX: &str = "_extracted";

/// Where a label comes from. Precedence for the base name: stream >
/// structured metadata > parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelCategory {
    Stream = 0,
    StructuredMetadata = 1,
    Parsed = 2,
}

/// The labels of one processed line, with its stable hash (the same as
/// [`Labels::stable_hash`] of [`LabelsResult::labels`]) so that callers
/// group series without rehashing. Shared: the same label set on many lines
/// is one allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelsResult {
    labels: Labels,
    hash: u64,
    stream: Labels,
    structured_metadata: Labels,
    parsed: Labels,
}

impl LabelsResult {
    fn from_stream(labels: Labels) -> Self {
        Self {
            hash: labels.stable_hash(),
            stream: labels.clone(),
            labels,
            structured_metadata: Labels::new(),
            parsed: Labels::new(),
        }
    }

    /// Every label, sorted.
    pub fn labels(&self) -> &Labels {
        &self.labels
    }
    /// `labels().stable_hash()`, computed once.
    pub fn hash(&self) -> u64 {
        self.hash
    }
    /// The stream labels that survived the pipeline (and labels renamed or
    /// set from stream labels).
    pub fn stream(&self) -> &Labels {
        &self.stream
    }
    pub fn structured_metadata(&self) -> &Labels {
        &self.structured_metadata
    }
    /// Labels extracted by parsers or set by `label_format`, plus
    /// `__error__`/`__error_details__`.
    pub fn parsed(&self) -> &Labels {
        &self.parsed
    }
}

/// A vector of pairs that keeps its strings' capacity across lines.
#[derive(Debug, Default)]
pub(crate) struct PairVec {
    items: Vec<(String, String)>,
    len: usize,
}

impl PairVec {
    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }
    pub(crate) fn as_slice(&self) -> &[(String, String)] {
        &self.items[..self.len]
    }
    pub(crate) fn position(&self, name: &str) -> Option<usize> {
        self.as_slice().iter().position(|(n, _)| n == name)
    }
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.position(name).is_some()
    }
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.position(name).map(|i| self.items[i].1.as_str())
    }
    pub(crate) fn push(&mut self, name: &str, value: &str) {
        if self.len < self.items.len() {
            let slot = &mut self.items[self.len];
            slot.0.clear();
            slot.0.push_str(name);
            slot.1.clear();
            slot.1.push_str(value);
        } else {
            self.items.push((name.to_string(), value.to_string()));
        }
        self.len += 1;
    }
    pub(crate) fn set_value(&mut self, i: usize, value: &str) {
        let slot = &mut self.items[i].1;
        slot.clear();
        slot.push_str(value);
    }
    pub(crate) fn remove(&mut self, name: &str) {
        if let Some(i) = self.position(name) {
            self.items[i..self.len].rotate_left(1);
            self.len -= 1;
        }
    }
}

/// The label state of the line being processed.
#[derive(Debug)]
pub struct LabelsBuilder {
    base: Labels,
    base_result: Arc<LabelsResult>,
    del: Vec<String>,
    add: [PairVec; 3],
    err: String,
    err_details: String,
    cache: HashMap<u64, Arc<LabelsResult>>,
    scratch: Vec<(String, String, LabelCategory)>,
}

const MAX_CACHED_RESULTS: usize = 4096;

impl LabelsBuilder {
    pub fn new(base: Labels) -> Self {
        let base_result = Arc::new(LabelsResult::from_stream(base.clone()));
        Self {
            base,
            base_result,
            del: Vec::new(),
            add: Default::default(),
            err: String::new(),
            err_details: String::new(),
            cache: HashMap::new(),
            scratch: Vec::new(),
        }
    }

    /// Starts a new line.
    pub fn reset(&mut self) {
        self.del.clear();
        for a in &mut self.add {
            a.clear();
        }
        self.err.clear();
        self.err_details.clear();
    }

    pub fn base(&self) -> &Labels {
        &self.base
    }

    pub fn has_err(&self) -> bool {
        !self.err.is_empty()
    }
    pub fn err(&self) -> &str {
        &self.err
    }
    pub fn err_details(&self) -> &str {
        &self.err_details
    }
    pub fn set_err(&mut self, err: &str) {
        self.err.clear();
        self.err.push_str(err);
    }
    pub fn set_err_details(&mut self, details: &str) {
        self.err_details.clear();
        self.err_details.push_str(details);
    }
    /// Sets the error and its details unless the line already has an error.
    pub fn set_err_if_none(&mut self, err: &str, details: &str) {
        if !self.has_err() {
            self.set_err(err);
            self.set_err_details(details);
        }
    }
    pub fn reset_err(&mut self) {
        self.err.clear();
    }
    pub fn reset_err_details(&mut self) {
        self.err_details.clear();
    }

    /// Whether a stream label of this name exists (deleted or not).
    pub fn base_has(&self, name: &str) -> bool {
        self.base.get(name).is_some()
    }

    pub fn has_in_category(&self, name: &str, category: LabelCategory) -> bool {
        self.add[category as usize].contains(name)
    }

    /// The visible value of `name` and its category.
    pub fn get_with_category(&self, name: &str) -> Option<(&str, LabelCategory)> {
        for (cat, category) in [
            LabelCategory::Stream,
            LabelCategory::StructuredMetadata,
            LabelCategory::Parsed,
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(v) = self.add[cat].get(name) {
                return Some((v, category));
            }
        }
        if self.del.iter().any(|d| d == name) {
            return None;
        }
        match self.base.get(name) {
            Some(v) if !v.is_empty() => Some((v, LabelCategory::Stream)),
            _ => None,
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_with_category(name).map(|(v, _)| v)
    }

    /// The value a string matcher sees: errors for the error labels, the
    /// empty string for a missing label.
    pub fn value_for_matcher(&self, name: &str) -> &str {
        match name {
            ERROR_LABEL => &self.err,
            ERROR_DETAILS_LABEL => &self.err_details,
            _ => self.get(name).unwrap_or(""),
        }
    }

    /// Sets a label in a category with Loki's precedence: a parsed label
    /// hides stream and metadata labels of the same name, metadata hides a
    /// stream label.
    pub fn set(&mut self, category: LabelCategory, name: &str, value: &str) {
        match category {
            LabelCategory::Parsed => {
                self.add[LabelCategory::StructuredMetadata as usize].remove(name);
                self.add[LabelCategory::Stream as usize].remove(name);
            }
            LabelCategory::StructuredMetadata => {
                self.add[LabelCategory::Stream as usize].remove(name);
                if self.add[LabelCategory::Parsed as usize].contains(name) {
                    return;
                }
            }
            LabelCategory::Stream => {
                if self.add[LabelCategory::StructuredMetadata as usize].contains(name)
                    || self.add[LabelCategory::Parsed as usize].contains(name)
                {
                    return;
                }
            }
        }
        // A label set again after a delete is visible again.
        if let Some(i) = self.del.iter().position(|d| d == name) {
            self.del.swap_remove(i);
        }
        let add = &mut self.add[category as usize];
        match add.position(name) {
            Some(i) => add.set_value(i, value),
            None => add.push(name, value),
        }
    }

    /// Adds the structured metadata of the line: a name that is also a
    /// stream label becomes `<name>_extracted`.
    pub fn add_structured_metadata(&mut self, metadata: &[(String, String)]) {
        let mut scratch = String::new();
        for (name, value) in metadata {
            let name = if self.base_has(name) {
                scratch.clear();
                scratch.push_str(name);
                scratch.push_str(DUPLICATE_SUFFIX);
                scratch.as_str()
            } else {
                name.as_str()
            };
            match name {
                ERROR_LABEL => self.set_err(value),
                ERROR_DETAILS_LABEL => self.set_err_details(value),
                _ => self.set(LabelCategory::StructuredMetadata, name, value),
            }
        }
    }

    /// Adds a label found by a parser: a name taken by a stream label or
    /// structured metadata becomes `<name>_extracted`; a name this line
    /// already extracted keeps its first value.
    pub fn add_parsed(&mut self, name: &str, value: &str) {
        if self.base_has(name) || self.has_in_category(name, LabelCategory::StructuredMetadata) {
            let mut key = String::with_capacity(name.len() + DUPLICATE_SUFFIX.len());
            key.push_str(name);
            key.push_str(DUPLICATE_SUFFIX);
            self.add_parsed_exact(&key, value);
        } else {
            self.add_parsed_exact(name, value);
        }
    }

    fn add_parsed_exact(&mut self, name: &str, value: &str) {
        if self.has_in_category(name, LabelCategory::Parsed) {
            return;
        }
        self.set(LabelCategory::Parsed, name, value);
    }

    /// Whether a parsed label of that (final) name was already extracted on
    /// this line.
    pub fn parsed_has(&self, name: &str) -> bool {
        self.has_in_category(name, LabelCategory::Parsed)
    }

    pub fn del(&mut self, name: &str) {
        for a in &mut self.add {
            a.remove(name);
        }
        if !self.del.iter().any(|d| d == name) {
            self.del.push(name.to_string());
        }
    }

    fn changed(&self) -> bool {
        !self.del.is_empty()
            || self.add.iter().any(|a| a.len > 0)
            || !self.err.is_empty()
            || !self.err_details.is_empty()
    }

    /// Calls `f` for every visible label (unsorted), error labels last.
    pub fn for_each<'s>(&'s self, mut f: impl FnMut(&'s str, &'s str, LabelCategory)) {
        let stream = &self.add[LabelCategory::Stream as usize];
        let meta = &self.add[LabelCategory::StructuredMetadata as usize];
        let parsed = &self.add[LabelCategory::Parsed as usize];
        for l in &self.base {
            if self.del.contains(&l.name) || meta.contains(&l.name) || parsed.contains(&l.name) {
                continue;
            }
            f(
                &l.name,
                stream.get(&l.name).unwrap_or(&l.value),
                LabelCategory::Stream,
            );
        }
        for (n, v) in stream.as_slice() {
            if !self.base_has(n) && !meta.contains(n) && !parsed.contains(n) {
                f(n, v, LabelCategory::Stream);
            }
        }
        for (n, v) in meta.as_slice() {
            if !parsed.contains(n) {
                f(n, v, LabelCategory::StructuredMetadata);
            }
        }
        for (n, v) in parsed.as_slice() {
            // The line's own error wins over a parsed label of that name.
            if (n == ERROR_LABEL && !self.err.is_empty())
                || (n == ERROR_DETAILS_LABEL && !self.err_details.is_empty())
            {
                continue;
            }
            f(n, v, LabelCategory::Parsed);
        }
        if !self.err.is_empty() {
            f(ERROR_LABEL, &self.err, LabelCategory::Parsed);
        }
        if !self.err_details.is_empty() {
            f(
                ERROR_DETAILS_LABEL,
                &self.err_details,
                LabelCategory::Parsed,
            );
        }
    }

    /// The label set of the line, shared with earlier lines that had the
    /// same set.
    pub fn result(&mut self) -> Arc<LabelsResult> {
        if !self.changed() {
            return self.base_result.clone();
        }
        // Copy the visible labels into reused strings (no allocation once
        // warm), sort by name, hash, and look the set up.
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut len = 0;
        self.for_each(|n, v, c| {
            if let Some(slot) = scratch.get_mut(len) {
                slot.0.clear();
                slot.0.push_str(n);
                slot.1.clear();
                slot.1.push_str(v);
                slot.2 = c;
            } else {
                scratch.push((n.to_string(), v.to_string(), c));
            }
            len += 1;
        });
        let pairs = &mut scratch[..len];
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        let hash = hash_pairs(pairs.iter().map(|(n, v, _)| (n.as_str(), v.as_str())));
        if let Some(cached) = self.cache.get(&hash)
            && cached.labels.len() == pairs.len()
            && cached
                .labels
                .iter()
                .zip(pairs.iter())
                .all(|(l, (n, v, _))| l.name == *n && l.value == *v)
        {
            let cached = cached.clone();
            self.scratch = scratch;
            return cached;
        }
        let pairs = &scratch[..len];
        let pick = |cat: LabelCategory| {
            Labels::from_pairs(
                pairs
                    .iter()
                    .filter(|p| p.2 == cat)
                    .map(|p| (p.0.as_str(), p.1.as_str())),
            )
        };
        let result = Arc::new(LabelsResult {
            labels: Labels::from_pairs(pairs.iter().map(|p| (p.0.as_str(), p.1.as_str()))),
            hash,
            stream: pick(LabelCategory::Stream),
            structured_metadata: pick(LabelCategory::StructuredMetadata),
            parsed: pick(LabelCategory::Parsed),
        });
        self.scratch = scratch;
        if self.cache.len() >= MAX_CACHED_RESULTS {
            self.cache.clear();
        }
        self.cache.insert(hash, result.clone());
        result
    }
}

/// The same hash as [`Labels::stable_hash`], over sorted pairs.
pub(crate) fn hash_pairs<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (n, v) in pairs {
        hasher.update(n.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(v.as_bytes());
        hasher.update(&[0xff]);
    }
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_extracted() {
        let base = Labels::from_pairs([("app", "a"), ("sp", "s"), ("sm", "s"), ("tri", "s")]);
        let mut b = LabelsBuilder::new(base);
        b.add_structured_metadata(&[
            ("mp".into(), "m".into()),
            ("sm".into(), "m".into()),
            ("tri".into(), "m".into()),
        ]);
        b.add_parsed("sp", "p");
        b.add_parsed("mp", "p");
        b.add_parsed("tri", "p");
        let r = b.result();
        assert_eq!(
            r.labels().to_string(),
            r#"{app="a", mp="m", mp_extracted="p", sm="s", sm_extracted="m", sp="s", sp_extracted="p", tri="s", tri_extracted="p"}"#
        );
        assert_eq!(
            r.parsed().to_string(),
            r#"{mp_extracted="p", sp_extracted="p", tri_extracted="p"}"#
        );
        assert_eq!(
            r.structured_metadata().to_string(),
            r#"{mp="m", sm_extracted="m"}"#
        );
        assert_eq!(r.hash(), r.labels().stable_hash());
    }

    #[test]
    fn result_is_cached_and_unchanged_is_base() {
        let mut b = LabelsBuilder::new(Labels::from_pairs([("app", "a")]));
        let r0 = b.result();
        b.add_parsed("x", "1");
        let r1 = b.result();
        b.reset();
        assert!(Arc::ptr_eq(&r0, &b.result()));
        b.add_parsed("x", "1");
        assert!(Arc::ptr_eq(&r1, &b.result()));
    }
}
