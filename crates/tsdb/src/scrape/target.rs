//! From discovered labels to a scrape target (Prometheus' `PopulateLabels`
//! and `Target.URL`), and the labels of scraped samples
//! (`mutateSampleLabels`).

use std::collections::BTreeMap;
use std::time::Duration;

use lucia_common::duration::parse_prometheus_duration;
use lucia_common::relabel::{RelabelConfig, relabel};

use super::config::PoolConfig;

/// A label set (sorted by name).
pub type LabelMap = BTreeMap<String, String>;

pub const ADDRESS: &str = "__address__";
pub const SCHEME: &str = "__scheme__";
pub const METRICS_PATH: &str = "__metrics_path__";
pub const SCRAPE_INTERVAL: &str = "__scrape_interval__";
pub const SCRAPE_TIMEOUT: &str = "__scrape_timeout__";
pub const PARAM_PREFIX: &str = "__param_";
pub const META_PREFIX: &str = "__meta_";
pub const RESERVED_PREFIX: &str = "__";

pub use lucia_common::discovery::TargetGroup;

/// A target after relabeling.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetSpec {
    /// Identity of the target: labels and URL (Prometheus' `Target.hash`).
    pub key: u64,
    /// Labels before relabeling (`discoveredLabels` in the API).
    pub discovered: LabelMap,
    /// Labels after relabeling, `__meta_*` removed.
    pub labels: LabelMap,
    /// The labels that go onto every sample (no `__` prefix).
    pub public: LabelMap,
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl TargetSpec {
    pub fn get(&self, name: &str) -> &str {
        self.labels.get(name).map(String::as_str).unwrap_or("")
    }
}

/// What [`populate`] made of one discovered target.
#[derive(Debug, Clone, PartialEq)]
pub enum Populated {
    Target(TargetSpec),
    /// Dropped by relabeling, with its discovered labels.
    Dropped(LabelMap),
}

/// The labels a target has before relabeling: its own, its group's, and
/// the job's defaults (`job`, `__scheme__`, `__metrics_path__`,
/// `__scrape_interval__`, `__scrape_timeout__`, `__param_*`). Empty values
/// are no labels.
pub fn discovered_labels(pool: &PoolConfig, target: &LabelMap, group: &LabelMap) -> LabelMap {
    let mut labels: LabelMap = target
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in group {
        if !target.contains_key(k) && !v.is_empty() {
            labels.insert(k.clone(), v.clone());
        }
    }
    let defaults = [
        ("job", pool.job_name.clone()),
        (SCRAPE_INTERVAL, pool.interval_string()),
        (SCRAPE_TIMEOUT, pool.timeout_string()),
        (METRICS_PATH, pool.scrape.metrics_path.clone()),
        (SCHEME, pool.scrape.scheme.clone()),
    ];
    for (name, value) in defaults {
        if !labels.contains_key(name) && !value.is_empty() {
            labels.insert(name.to_string(), value);
        }
    }
    for (name, values) in &pool.scrape.params {
        let label = format!("{PARAM_PREFIX}{name}");
        if let Some(first) = values.first()
            && !labels.contains_key(&label)
            && !first.is_empty()
        {
            labels.insert(label, first.clone());
        }
    }
    labels
}

/// Relabels one discovered target and checks it as Prometheus does.
pub fn populate(
    pool: &PoolConfig,
    target: &LabelMap,
    group: &LabelMap,
) -> Result<Populated, String> {
    let discovered = discovered_labels(pool, target, group);
    let Some(mut labels) = relabel(discovered.clone(), &pool.scrape.relabel_configs) else {
        return Ok(Populated::Dropped(discovered));
    };
    let address = labels.get(ADDRESS).cloned().unwrap_or_default();
    if address.is_empty() {
        return Err("no address".into());
    }
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    let duration = |name: &str, what: &str| -> Result<Duration, String> {
        let text = labels.get(name).map(String::as_str).unwrap_or("");
        let d = parse_prometheus_duration(text)
            .map_err(|e| format!("error parsing scrape {what}: {e}"))?;
        if d.is_zero() {
            return Err(format!("scrape {what} cannot be 0"));
        }
        Ok(d)
    };
    let interval = duration(SCRAPE_INTERVAL, "interval")?;
    let timeout = duration(SCRAPE_TIMEOUT, "timeout")?;
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            labels.get(SCRAPE_TIMEOUT).map(String::as_str).unwrap_or(""),
            labels
                .get(SCRAPE_INTERVAL)
                .map(String::as_str)
                .unwrap_or("")
        ));
    }
    labels.retain(|name, _| !name.starts_with(META_PREFIX));
    if !labels.contains_key("instance") {
        labels.insert("instance".into(), address);
    }
    let url = target_url(pool, &labels);
    let public: LabelMap = labels
        .iter()
        .filter(|(k, _)| !k.starts_with(RESERVED_PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let key = target_key(&labels, &url);
    Ok(Populated::Target(TargetSpec {
        key,
        discovered,
        labels,
        public,
        url,
        interval,
        timeout,
    }))
}

/// `scheme://address/path?params`, `__param_*` labels overriding the first
/// value of the job's `params`.
fn target_url(pool: &PoolConfig, labels: &LabelMap) -> String {
    let get = |name: &str| labels.get(name).map(String::as_str).unwrap_or("");
    let mut params: BTreeMap<String, Vec<String>> = pool.scrape.params.clone();
    for (name, value) in labels {
        if let Some(param) = name.strip_prefix(PARAM_PREFIX) {
            let values = params.entry(param.to_string()).or_default();
            match values.first_mut() {
                Some(first) => *first = value.clone(),
                None => values.push(value.clone()),
            }
        }
    }
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (name, values) in &params {
        for value in values {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    let mut path = get(METRICS_PATH).to_string();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let mut url = format!("{}://{}{}", get(SCHEME), get(ADDRESS), path);
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    url
}

fn target_key(labels: &LabelMap, url: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (k, v) in labels {
        hasher.update(k.as_bytes());
        hasher.update(&[0xff]);
        hasher.update(v.as_bytes());
        hasher.update(&[0xfe]);
    }
    hasher.update(url.as_bytes());
    hasher.digest()
}

/// The labels a scraped series gets: the target's labels (on conflict the
/// exposed value moves to `exported_<name>`, or with `honor_labels` the
/// exposed value wins), then `metric_relabel_configs`. `None` when
/// relabeling drops the series. Empty values are no labels.
pub fn sample_labels(
    name: &str,
    exposed: &[(String, String)],
    target: &LabelMap,
    honor_labels: bool,
    metric_relabel: &[RelabelConfig],
) -> Option<LabelMap> {
    let mut labels: LabelMap = exposed
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.insert("__name__".into(), name.to_string());
    if honor_labels {
        for (k, v) in target {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    } else {
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for (k, v) in target {
            if let Some(existing) = labels.insert(k.clone(), v.clone())
                && !existing.is_empty()
            {
                conflicts.push((k.clone(), existing));
            }
        }
        // Shorter names first, as Prometheus' resolveConflictingExposedLabels.
        conflicts.sort_by_key(|(k, _)| k.len());
        for (k, v) in conflicts {
            let mut new_name = k;
            loop {
                new_name = format!("exported_{new_name}");
                if let std::collections::btree_map::Entry::Vacant(slot) =
                    labels.entry(new_name.clone())
                {
                    slot.insert(v);
                    break;
                }
            }
        }
    }
    if metric_relabel.is_empty() {
        Some(labels)
    } else {
        relabel(labels, metric_relabel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::config::ScrapeFileConfig;

    fn pool(yaml: &str) -> PoolConfig {
        let config = ScrapeFileConfig::parse(std::path::Path::new("p.yml"), yaml).unwrap();
        config.pools().unwrap().remove(0)
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn populates_like_prometheus() {
        let pool = pool(
            "global: {scrape_interval: 15s}\nscrape_configs:\n  - job_name: node\n    params: {module: [a, b], x: ['1 2']}\n",
        );
        let got = populate(
            &pool,
            &labels(&[("__address__", "h:9100"), ("__meta_x", "y"), ("empty", "")]),
            &labels(&[("env", "prod"), ("__address__", "ignored")]),
        )
        .unwrap();
        let Populated::Target(t) = got else {
            panic!("dropped")
        };
        assert_eq!(
            t.discovered,
            labels(&[
                ("__address__", "h:9100"),
                ("__meta_x", "y"),
                ("__metrics_path__", "/metrics"),
                ("__param_module", "a"),
                ("__param_x", "1 2"),
                ("__scheme__", "http"),
                ("__scrape_interval__", "15s"),
                ("__scrape_timeout__", "10s"),
                ("env", "prod"),
                ("job", "node"),
            ])
        );
        assert_eq!(
            t.public,
            labels(&[("env", "prod"), ("instance", "h:9100"), ("job", "node")])
        );
        assert_eq!(t.url, "http://h:9100/metrics?module=a&module=b&x=1+2");
        assert_eq!(t.interval, Duration::from_secs(15));
        assert!(!t.labels.contains_key("__meta_x"));
    }

    #[test]
    fn relabeling_drops_and_rewrites() {
        let pool = pool(
            r#"
scrape_configs:
  - job_name: j
    relabel_configs:
      - {source_labels: [__address__], regex: 'drop.*', action: drop}
      - {source_labels: [__address__], regex: '(.*):.*', target_label: __param_target, replacement: '$1'}
      - {target_label: __address__, replacement: 'exporter:9115'}
      - {source_labels: [__param_target], target_label: instance}
      - {target_label: __scrape_interval__, replacement: 30s}
"#,
        );
        let dropped = populate(
            &pool,
            &labels(&[("__address__", "drop:1")]),
            &LabelMap::new(),
        );
        assert!(matches!(dropped, Ok(Populated::Dropped(_))));
        let Ok(Populated::Target(t)) = populate(
            &pool,
            &labels(&[("__address__", "web:80")]),
            &LabelMap::new(),
        ) else {
            panic!("not a target")
        };
        assert_eq!(t.url, "http://exporter:9115/metrics?target=web");
        assert_eq!(t.public["instance"], "web");
        assert_eq!(t.interval, Duration::from_secs(30));
        let err = populate(&pool, &labels(&[("x", "1")]), &LabelMap::new());
        assert!(matches!(err, Ok(Populated::Target(_))), "{err:?}");
    }

    #[test]
    fn invalid_targets() {
        let pool = pool(
            "scrape_configs:\n  - job_name: j\n    relabel_configs: [{target_label: __scrape_timeout__, replacement: 2m}]\n",
        );
        let err = populate(&pool, &labels(&[("__address__", "a:1")]), &LabelMap::new());
        assert!(err.unwrap_err().contains("greater than scrape interval"));
        let pool2 = self::pool("scrape_configs:\n  - job_name: j\n");
        let err = populate(&pool2, &labels(&[("x", "1")]), &LabelMap::new()).unwrap_err();
        assert_eq!(err, "no address");
    }

    #[test]
    fn sample_label_conflicts() {
        let target = labels(&[("instance", "h:1"), ("job", "j")]);
        let exposed = vec![
            ("job".to_string(), "exposed".to_string()),
            ("exported_job".to_string(), "x".to_string()),
            ("a".to_string(), String::new()),
        ];
        let got = sample_labels("m", &exposed, &target, false, &[]).unwrap();
        assert_eq!(
            got,
            labels(&[
                ("__name__", "m"),
                ("exported_exported_job", "exposed"),
                ("exported_job", "x"),
                ("instance", "h:1"),
                ("job", "j"),
            ])
        );
        let got = sample_labels("m", &exposed, &target, true, &[]).unwrap();
        assert_eq!(got["job"], "exposed");
        assert_eq!(got["instance"], "h:1");
    }
}
