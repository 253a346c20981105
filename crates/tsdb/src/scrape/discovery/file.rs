//! `file_sd_configs`: JSON or YAML files of target groups, found by glob
//! patterns, re-read when they change (polled every second) and in full
//! every `refresh_interval`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use lucia_common::Shutdown;
use lucia_common::labels::is_valid_label_name;

use super::{Update, UpdateSender};
use crate::scrape::config::{FileSdConfig, StaticConfig};
use crate::scrape::metrics::ScrapeMetrics;
use crate::scrape::target::{ADDRESS, LabelMap, TargetGroup};

/// The label naming the file a target came from.
pub const FILEPATH_LABEL: &str = "__meta_filepath";

/// How often files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// What was last read from a file.
struct Seen {
    modified: Option<SystemTime>,
    len: u64,
    groups: usize,
}

pub async fn run(
    provider: usize,
    config: FileSdConfig,
    tx: UpdateSender,
    stop: Shutdown,
    metrics: ScrapeMetrics,
) {
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let poll = POLL
        .min(config.refresh_interval.0)
        .max(Duration::from_millis(50));
    let mut last_full = tokio::time::Instant::now();
    let mut first = true;
    loop {
        let full = first || last_full.elapsed() >= config.refresh_interval.0;
        if full {
            last_full = tokio::time::Instant::now();
        }
        let groups = refresh(&config, &mut seen, full, &metrics);
        if !groups.is_empty() || first {
            let update = Update { provider, groups };
            tokio::select! {
                _ = stop.cancelled() => return,
                sent = tx.send(update) => if sent.is_err() { return },
            }
        }
        first = false;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Re-reads files that are new or changed (all when `full`); returns the
/// groups to send, with empty groups for sources that went away.
fn refresh(
    config: &FileSdConfig,
    seen: &mut HashMap<PathBuf, Seen>,
    full: bool,
    metrics: &ScrapeMetrics,
) -> Vec<TargetGroup> {
    let mut files: Vec<PathBuf> = Vec::new();
    for pattern in &config.files {
        files.extend(expand(pattern));
    }
    files.sort();
    files.dedup();
    let mut out = Vec::new();
    for path in &files {
        let meta = std::fs::metadata(path).ok();
        let modified = meta.as_ref().and_then(|m| m.modified().ok());
        let len = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        let previous = seen.get(path);
        let changed = previous.is_none_or(|p| p.modified != modified || p.len != len);
        if !full && !changed {
            continue;
        }
        match read_file(path) {
            Ok(groups) => {
                let old = previous.map(|p| p.groups).unwrap_or(0);
                let count = groups.len();
                out.extend(groups);
                out.extend((count..old).map(|i| empty_group(path, i)));
                seen.insert(
                    path.clone(),
                    Seen {
                        modified,
                        len,
                        groups: count,
                    },
                );
            }
            Err(err) => {
                // Keep what the file gave before, as Prometheus does.
                metrics.file_read_errors.inc();
                tracing::error!(file = %path.display(), %err, "file_sd: cannot read target file");
                if let Some(p) = seen.get_mut(path) {
                    p.modified = modified;
                    p.len = len;
                }
            }
        }
    }
    let gone: Vec<PathBuf> = seen
        .keys()
        .filter(|p| !files.contains(p))
        .cloned()
        .collect();
    for path in gone {
        if let Some(old) = seen.remove(&path) {
            out.extend((0..old.groups).map(|i| empty_group(&path, i)));
        }
    }
    out
}

fn source(path: &Path, i: usize) -> String {
    format!("{}:{i}", path.display())
}

fn empty_group(path: &Path, i: usize) -> TargetGroup {
    TargetGroup {
        source: source(path, i),
        ..Default::default()
    }
}

/// Reads one file of target groups.
pub fn read_file(path: &Path) -> Result<Vec<TargetGroup>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let configs: Vec<StaticConfig> = if ext == "json" {
        serde_json::from_str(&text).map_err(|e| e.to_string())?
    } else {
        lucia_common::config::parse(path, &text).map_err(|e| e.to_string())?
    };
    let filepath = path.display().to_string();
    let mut groups = Vec::with_capacity(configs.len());
    for (i, config) in configs.into_iter().enumerate() {
        for name in config.labels.keys() {
            if !is_valid_label_name(name) {
                return Err(format!("{name:?} is not a valid label name"));
            }
        }
        let mut labels = config.labels;
        labels.insert(FILEPATH_LABEL.into(), filepath.clone());
        groups.push(TargetGroup {
            source: source(path, i),
            labels,
            targets: config
                .targets
                .into_iter()
                .map(|t| LabelMap::from([(ADDRESS.to_string(), t)]))
                .collect(),
        });
    }
    Ok(groups)
}

/// The files a pattern matches: wildcards (`*`, `?`) only in the last
/// component, as Prometheus allows.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if !name.contains(['*', '?']) {
        return if path.is_file() {
            vec![path.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| wildcard_match(name.as_bytes(), n.as_bytes()))
        })
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// `*` matches any run of characters, `?` one character.
fn wildcard_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match(b"tg_*.json", b"tg_a.json"));
        assert!(wildcard_match(b"*.json", b".json"));
        assert!(wildcard_match(b"a?c.yml", b"abc.yml"));
        assert!(!wildcard_match(b"tg_*.json", b"tg_a.yml"));
        assert!(!wildcard_match(b"a", b"ab"));
    }

    #[test]
    fn reads_json_and_yaml_and_notices_changes() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("a.json");
        std::fs::write(
            &json,
            r#"[{"targets": ["h1:1", "h2:2"], "labels": {"env": "prod"}}, {"targets": ["h3:3"]}]"#,
        )
        .unwrap();
        let yaml = dir.path().join("b.yml");
        std::fs::write(&yaml, "- targets: ['y:1']\n").unwrap();
        let config = FileSdConfig {
            files: vec![
                format!("{}/*.json", dir.path().display()),
                format!("{}/b.yml", dir.path().display()),
            ],
            refresh_interval: lucia_common::duration::ConfigDuration::from_secs(300),
        };
        let metrics = ScrapeMetrics::default();
        let mut seen = HashMap::new();
        let groups = refresh(&config, &mut seen, true, &metrics);
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].targets.len(), 2);
        assert_eq!(groups[0].labels["env"], "prod");
        assert_eq!(groups[0].labels[FILEPATH_LABEL], json.display().to_string());
        assert_eq!(groups[2].source, format!("{}:0", yaml.display()));
        // Nothing changed: nothing to send.
        assert!(refresh(&config, &mut seen, false, &metrics).is_empty());
        // One group fewer: it is sent empty.
        std::fs::write(&json, r#"[{"targets": ["h1:1"]}]"#).unwrap();
        let groups = refresh(&config, &mut seen, false, &metrics);
        assert_eq!(groups.len(), 2);
        assert!(groups[1].targets.is_empty());
        // A broken file keeps its targets; a removed one empties them.
        std::fs::write(&yaml, "- targets: [unclosed\n").unwrap();
        assert!(refresh(&config, &mut seen, false, &metrics).is_empty());
        assert_eq!(metrics.file_read_errors.get(), 1);
        std::fs::remove_file(&yaml).unwrap();
        let groups = refresh(&config, &mut seen, false, &metrics);
        assert_eq!(groups.len(), 1);
        assert!(groups[0].targets.is_empty());
    }
}
