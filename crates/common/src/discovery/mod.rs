//! Service discovery shared by the roles that find targets: tsdb's scraper
//! (Prometheus' `*_sd_configs`) and the agent (Promtail's, which are the
//! same). A mechanism produces [`TargetGroup`]s; the role relabels their
//! targets with its own `relabel_configs`.

pub mod consul;
pub mod consulagent;

use crate::relabel::LabelMap;

/// The label that holds a target's address.
pub const ADDRESS: &str = "__address__";

/// Targets a discovery source found, under one `source` key: a newer group
/// with the same source replaces the older one (an empty group deletes).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TargetGroup {
    pub source: String,
    /// Labels common to every target of the group.
    pub labels: LabelMap,
    /// One label set per target (at least `__address__`).
    pub targets: Vec<LabelMap>,
}

/// A target's labels under construction: empty values are left out, as
/// Prometheus' discovery mechanisms leave them.
#[derive(Debug, Default)]
pub struct TargetLabels(LabelMap);

impl TargetLabels {
    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let value = value.into();
        if !value.is_empty() {
            self.0.insert(name.into(), value);
        }
    }

    /// Each `(key, value)` as `<prefix><key>`, the key made a valid label
    /// name (node meta, service meta, tagged addresses).
    pub fn set_prefixed<K: AsRef<str>>(
        &mut self,
        prefix: &str,
        pairs: impl IntoIterator<Item = (K, String)>,
    ) {
        for (key, value) in pairs {
            self.set(
                format!("{prefix}{}", sanitize_label_name(key.as_ref())),
                value,
            );
        }
    }

    pub fn into_map(self) -> LabelMap {
        self.0
    }
}

/// Tags joined by `separator`, with it on both ends too so that relabeling
/// regexes need not care where a tag stands (`,a,b,`).
pub fn joined_tags(tags: &[String], separator: &str) -> String {
    format!("{separator}{}{separator}", tags.join(separator))
}

/// Replaces characters that may not appear in a label name with `_`
/// (Prometheus' `strutil.SanitizeLabelName`).
pub fn sanitize_label_name(name: &str) -> String {
    name.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_alphabetic() || c == '_' || (i > 0 && c.is_ascii_digit()) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitizes() {
        assert_eq!(sanitize_label_name("rack-id.1"), "rack_id_1");
        assert_eq!(sanitize_label_name("1a"), "_a");
    }
}
