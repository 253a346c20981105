//! The postings index in memory: per tenant, label name and value, the
//! sorted ids of the series that carry it. The `postings` family stays the
//! durable copy; this one is rebuilt from the `series` family at start and
//! kept in step with it, so selecting series intersects sorted id lists
//! instead of iterating rocksdb keys (Prometheus keeps its head index in
//! memory the same way). It also holds each series' label set, as ids of
//! interned strings, so that a query reads no label set from rocksdb.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::promql::{LabelMatcher, Labels, MatchOp};

#[derive(Default)]
pub(super) struct MemPostings {
    tenants: HashMap<String, TenantPostings>,
    /// Each series' labels: symbol ids of name, value, name, value, ...
    series: HashMap<u64, Box<[u32]>>,
    symbols: Symbols,
}

/// Interned label names and values. A symbol outlives the series that
/// used it until the next start (garbage collection of series is rare and
/// the table is rebuilt at start).
#[derive(Default)]
struct Symbols {
    strings: Vec<Arc<str>>,
    ids: HashMap<Arc<str>, u32>,
}

impl Symbols {
    /// The id of `s`; `None` once 2^32 strings are interned.
    fn intern(&mut self, s: &str) -> Option<u32> {
        if let Some(&id) = self.ids.get(s) {
            return Some(id);
        }
        let id = u32::try_from(self.strings.len()).ok()?;
        let s: Arc<str> = Arc::from(s);
        self.strings.push(s.clone());
        self.ids.insert(s, id);
        Some(id)
    }

    fn get(&self, id: u32) -> &str {
        self.strings.get(id as usize).map_or("", |s| s)
    }
}

#[derive(Default)]
struct TenantPostings {
    /// Every series of the tenant.
    all: Vec<u64>,
    /// Label name, then value, then series.
    labels: HashMap<String, BTreeMap<String, Vec<u64>>>,
}

impl MemPostings {
    pub(super) fn add(&mut self, tenant: &str, labels: &Labels, id: u64) {
        let t = match self.tenants.get_mut(tenant) {
            Some(t) => t,
            None => self.tenants.entry(tenant.to_string()).or_default(),
        };
        insert_sorted(&mut t.all, id);
        let symbols = &mut self.symbols;
        let interned: Option<Box<[u32]>> = labels
            .iter()
            .flat_map(|(name, value)| [symbols.intern(name), symbols.intern(value)])
            .collect();
        // Without symbols left, the label set is read from rocksdb.
        if let Some(interned) = interned {
            self.series.insert(id, interned);
        }
        for (name, value) in labels {
            let values = match t.labels.get_mut(name) {
                Some(v) => v,
                None => t.labels.entry(name.clone()).or_default(),
            };
            match values.get_mut(value) {
                Some(ids) => insert_sorted(ids, id),
                None => {
                    values.insert(value.clone(), vec![id]);
                }
            }
        }
    }

    pub(super) fn remove(&mut self, tenant: &str, labels: &Labels, id: u64) {
        let Some(t) = self.tenants.get_mut(tenant) else {
            return;
        };
        remove_sorted(&mut t.all, id);
        self.series.remove(&id);
        for (name, value) in labels {
            let Some(values) = t.labels.get_mut(name) else {
                continue;
            };
            if let Some(ids) = values.get_mut(value) {
                remove_sorted(ids, id);
                if ids.is_empty() {
                    values.remove(value);
                }
            }
            if values.is_empty() {
                t.labels.remove(name);
            }
        }
        if t.all.is_empty() {
            self.tenants.remove(tenant);
        }
    }

    /// The label set of series `id`, if the index has it.
    pub(super) fn labels(&self, id: u64) -> Option<Labels> {
        let interned = self.series.get(&id)?;
        Some(
            interned
                .chunks_exact(2)
                .map(|pair| {
                    (
                        self.symbols.get(pair[0]).to_string(),
                        self.symbols.get(pair[1]).to_string(),
                    )
                })
                .collect(),
        )
    }

    /// Sorted ids of `tenant`'s series that match every matcher (a label
    /// that is absent matches as the empty value).
    pub(super) fn select(&self, tenant: &str, matchers: &[LabelMatcher]) -> Vec<u64> {
        let Some(t) = self.tenants.get(tenant) else {
            return Vec::new();
        };
        // Matchers that select by value come first: they narrow fastest.
        let mut ordered: Vec<&LabelMatcher> = matchers.iter().collect();
        ordered.sort_by_key(|m| m.matches_value(""));
        let mut result: Option<Vec<u64>> = None;
        for m in ordered {
            let matches_empty = m.matches_value("");
            let values = t.labels.get(&m.name);
            let set = if m.op == MatchOp::Equal && !matches_empty {
                values
                    .and_then(|v| v.get(&m.value))
                    .map(Vec::as_slice)
                    .unwrap_or(&[])
                    .to_vec()
            } else {
                // Every value of the label: keep the matching ones, or,
                // for a matcher that matches the empty value, everything
                // but the non-matching ones.
                let lists: Vec<&[u64]> = values
                    .into_iter()
                    .flatten()
                    .filter(|(value, _)| m.matches_value(value) != matches_empty)
                    .map(|(_, ids)| ids.as_slice())
                    .collect();
                let listed = union(&lists);
                if matches_empty {
                    difference(result.as_deref().unwrap_or(&t.all), &listed)
                } else {
                    listed
                }
            };
            let narrowed = match result {
                None => set,
                Some(r) => intersect(&r, &set),
            };
            let empty = narrowed.is_empty();
            result = Some(narrowed);
            if empty {
                break;
            }
        }
        result.unwrap_or_else(|| t.all.clone())
    }
}

fn insert_sorted(ids: &mut Vec<u64>, id: u64) {
    // Ids grow over time: appending is the common case.
    match ids.last() {
        Some(&last) if last >= id => {
            if let Err(at) = ids.binary_search(&id) {
                ids.insert(at, id);
            }
        }
        _ => ids.push(id),
    }
}

fn remove_sorted(ids: &mut Vec<u64>, id: u64) {
    if let Ok(at) = ids.binary_search(&id) {
        ids.remove(at);
    }
}

fn union(lists: &[&[u64]]) -> Vec<u64> {
    match lists {
        [] => Vec::new(),
        [one] => one.to_vec(),
        _ => {
            let mut all: Vec<u64> = lists.iter().flat_map(|l| l.iter().copied()).collect();
            all.sort_unstable();
            all.dedup();
            all
        }
    }
}

fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    let mut rest = large;
    for &id in small {
        let at = rest.partition_point(|&x| x < id);
        rest = &rest[at..];
        match rest.first() {
            Some(&x) if x == id => out.push(id),
            Some(_) => {}
            None => break,
        }
    }
    out
}

/// `a` without the ids in `b` (both sorted).
fn difference(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &id in a {
        while j < b.len() && b[j] < id {
            j += 1;
        }
        if j >= b.len() || b[j] != id {
            out.push(id);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::tests::{labels, m};

    #[test]
    fn select_add_and_remove() {
        let mut p = MemPostings::default();
        p.add("t", &labels(&[("job", "api"), ("i", "1")]), 3);
        p.add("t", &labels(&[("job", "api"), ("i", "2")]), 1);
        p.add("t", &labels(&[("job", "db")]), 2);
        p.add("u", &labels(&[("job", "api")]), 9);
        assert_eq!(p.select("t", &[]), vec![1, 2, 3]);
        assert_eq!(
            p.select("t", &[m("job", MatchOp::Equal, "api")]),
            vec![1, 3]
        );
        assert_eq!(p.select("t", &[m("i", MatchOp::Equal, "")]), vec![2]);
        assert_eq!(p.select("t", &[m("i", MatchOp::NotEqual, "1")]), vec![1, 2]);
        assert_eq!(
            p.select("t", &[m("job", MatchOp::Regex, "a.*|d.*")]),
            vec![1, 2, 3]
        );
        assert_eq!(
            p.select(
                "t",
                &[
                    m("job", MatchOp::NotRegex, "db"),
                    m("i", MatchOp::Regex, "1|2")
                ]
            ),
            vec![1, 3]
        );
        assert!(p.select("v", &[]).is_empty());
        assert_eq!(p.labels(1), Some(labels(&[("job", "api"), ("i", "2")])));
        assert_eq!(p.labels(9), Some(labels(&[("job", "api")])));
        p.remove("t", &labels(&[("job", "api"), ("i", "2")]), 1);
        assert_eq!(p.labels(1), None);
        assert_eq!(p.labels(3), Some(labels(&[("job", "api"), ("i", "1")])));
        assert_eq!(p.select("t", &[m("job", MatchOp::Equal, "api")]), vec![3]);
        assert_eq!(p.select("t", &[m("i", MatchOp::Regex, ".+")]), vec![3]);
    }

    #[test]
    fn set_operations() {
        assert_eq!(intersect(&[1, 3, 5, 7], &[2, 3, 7, 9]), vec![3, 7]);
        assert_eq!(difference(&[1, 3, 5, 7], &[3, 4, 7]), vec![1, 5]);
        assert_eq!(union(&[&[1, 4], &[2, 4, 6]]), vec![1, 2, 4, 6]);
    }
}
