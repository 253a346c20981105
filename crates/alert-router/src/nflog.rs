//! The notification log: what each integration of each group was last sent,
//! so that a flush notifies only when something changed or the repeat
//! interval has passed, also across restarts.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::model::Time;
use crate::persist;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub firing: BTreeSet<u64>,
    pub resolved: BTreeSet<u64>,
    pub timestamp: Time,
    pub expires_at: Time,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    group_key: String,
    receiver: String,
    firing: Vec<u64>,
    resolved: Vec<u64>,
    timestamp: i64,
    expires_at: i64,
}

/// The log of one tenant, keyed by group key and receiver integration
/// (`receiver/integration/index`).
pub struct NotificationLog {
    entries: Mutex<HashMap<(String, String), Entry>>,
    path: Option<PathBuf>,
}

impl NotificationLog {
    pub fn open(path: Option<PathBuf>) -> std::io::Result<Self> {
        let mut entries = HashMap::new();
        if let Some(p) = &path
            && let Some(bytes) = persist::read(p)?
        {
            let stored: Vec<Stored> = serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("notification log snapshot {}: {e}", p.display()),
                )
            })?;
            for s in stored {
                entries.insert(
                    (s.group_key, s.receiver),
                    Entry {
                        firing: s.firing.into_iter().collect(),
                        resolved: s.resolved.into_iter().collect(),
                        timestamp: persist::from_millis(s.timestamp),
                        expires_at: persist::from_millis(s.expires_at),
                    },
                );
            }
        }
        Ok(Self {
            entries: Mutex::new(entries),
            path,
        })
    }

    pub fn query(&self, group_key: &str, receiver: &str) -> Option<Entry> {
        self.entries
            .lock()
            .get(&(group_key.to_string(), receiver.to_string()))
            .cloned()
    }

    pub fn log(
        &self,
        group_key: &str,
        receiver: &str,
        firing: BTreeSet<u64>,
        resolved: BTreeSet<u64>,
        now: Time,
        expiry: std::time::Duration,
    ) {
        let expires_at = now + chrono::Duration::from_std(expiry).unwrap_or(chrono::Duration::MAX);
        self.entries.lock().insert(
            (group_key.to_string(), receiver.to_string()),
            Entry {
                firing,
                resolved,
                timestamp: now,
                expires_at,
            },
        );
        if let Err(err) = self.snapshot() {
            tracing::error!(%err, "cannot write the notification log snapshot");
        }
    }

    /// Drops expired entries.
    pub fn gc(&self, now: Time) -> usize {
        let mut entries = self.entries.lock();
        let before = entries.len();
        entries.retain(|_, e| e.expires_at > now);
        before - entries.len()
    }

    pub fn snapshot(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stored: Vec<Stored> = self
            .entries
            .lock()
            .iter()
            .map(|((g, r), e)| Stored {
                group_key: g.clone(),
                receiver: r.clone(),
                firing: e.firing.iter().copied().collect(),
                resolved: e.resolved.iter().copied().collect(),
                timestamp: persist::to_millis(&e.timestamp),
                expires_at: persist::to_millis(&e.expires_at),
            })
            .collect();
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        persist::write_atomic(path, &bytes)
    }
}

/// Alertmanager's `DedupStage.needsUpdate`.
pub fn needs_update(
    entry: Option<&Entry>,
    firing: &BTreeSet<u64>,
    resolved: &BTreeSet<u64>,
    send_resolved: bool,
    repeat: std::time::Duration,
    now: Time,
) -> bool {
    let Some(entry) = entry else {
        return !firing.is_empty();
    };
    if !firing.is_subset(&entry.firing) {
        return true;
    }
    if firing.is_empty() {
        return !entry.firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(&entry.resolved) {
        return true;
    }
    let repeat = chrono::Duration::from_std(repeat).unwrap_or(chrono::Duration::MAX);
    entry.timestamp < now - repeat
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use std::time::Duration;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    #[test]
    fn dedup_rules() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        assert!(needs_update(None, &set(&[1]), &set(&[]), true, hour, now));
        assert!(!needs_update(None, &set(&[]), &set(&[1]), true, hour, now));
        let entry = Entry {
            firing: set(&[1, 2]),
            resolved: set(&[]),
            timestamp: now,
            expires_at: now,
        };
        assert!(!needs_update(
            Some(&entry),
            &set(&[1, 2]),
            &set(&[]),
            true,
            hour,
            now
        ));
        assert!(needs_update(
            Some(&entry),
            &set(&[1, 3]),
            &set(&[]),
            true,
            hour,
            now
        ));
        assert!(needs_update(
            Some(&entry),
            &set(&[1]),
            &set(&[2]),
            true,
            hour,
            now
        ));
        assert!(!needs_update(
            Some(&entry),
            &set(&[1]),
            &set(&[2]),
            false,
            hour,
            now
        ));
        assert!(needs_update(
            Some(&entry),
            &set(&[]),
            &set(&[1, 2]),
            false,
            hour,
            now
        ));
        let later = now + chrono::Duration::hours(2);
        assert!(needs_update(
            Some(&entry),
            &set(&[1, 2]),
            &set(&[]),
            true,
            hour,
            later
        ));
    }

    #[test]
    fn persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nflog.json");
        let log = NotificationLog::open(Some(path.clone())).unwrap();
        let now = Utc::now();
        log.log(
            "g",
            "r/webhook/0",
            set(&[1]),
            set(&[]),
            now,
            Duration::from_secs(60),
        );
        let reopened = NotificationLog::open(Some(path)).unwrap();
        assert_eq!(
            reopened.query("g", "r/webhook/0").unwrap().firing,
            set(&[1])
        );
        assert_eq!(reopened.gc(now + chrono::Duration::minutes(2)), 1);
    }
}
