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
