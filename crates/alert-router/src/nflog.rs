//! The notification log: what each integration of each group was last sent,
//! so that a flush notifies only when something changed or the repeat
//! interval has passed, also across restarts. In a cluster each new entry
//! is handed to the broadcast hook, and peers' entries are merged with
//! Alertmanager's rule: per (group key, receiver) the later timestamp wins.

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

/// An entry as the snapshot file and the cluster's messages carry it
/// (times in milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub group_key: String,
    pub receiver: String,
    pub firing: Vec<u64>,
    pub resolved: Vec<u64>,
    pub timestamp: i64,
    pub expires_at: i64,
}

impl Stored {
    fn of(group_key: &str, receiver: &str, e: &Entry) -> Self {
        Stored {
            group_key: group_key.to_string(),
            receiver: receiver.to_string(),
            firing: e.firing.iter().copied().collect(),
            resolved: e.resolved.iter().copied().collect(),
            timestamp: persist::to_millis(&e.timestamp),
            expires_at: persist::to_millis(&e.expires_at),
        }
    }

    fn into_entry(self) -> ((String, String), Entry) {
        (
            (self.group_key, self.receiver),
            Entry {
                firing: self.firing.into_iter().collect(),
                resolved: self.resolved.into_iter().collect(),
                timestamp: persist::from_millis(self.timestamp),
                expires_at: persist::from_millis(self.expires_at),
            },
        )
    }
}

/// Called with each entry logged here, so that the cluster can send it to
/// the peers.
pub type Broadcast = std::sync::Arc<dyn Fn(Stored) + Send + Sync>;

/// The log of one tenant, keyed by group key and receiver integration
/// (`receiver/integration/index`).
pub struct NotificationLog {
    entries: Mutex<HashMap<(String, String), Entry>>,
    path: Option<PathBuf>,
    broadcast: std::sync::OnceLock<Broadcast>,
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
            entries.extend(stored.into_iter().map(Stored::into_entry));
        }
        Ok(Self {
            entries: Mutex::new(entries),
            path,
            broadcast: std::sync::OnceLock::new(),
        })
    }

    /// Sets the hook that receives every entry logged here (once; the
    /// cluster sets it when the tenant is opened).
    pub fn set_broadcast(&self, broadcast: Broadcast) {
        let _ = self.broadcast.set(broadcast);
    }

    /// Every entry, for a peer's full-state sync.
    pub fn export(&self) -> Vec<Stored> {
        self.entries
            .lock()
            .iter()
            .map(|((g, r), e)| Stored::of(g, r, e))
            .collect()
    }

    /// Merges entries from a peer: one wins when it is new here or has a
    /// later timestamp than ours (Alertmanager's rule); expired entries
    /// are not taken. Persists when something changed and returns how
    /// many entries changed.
    pub fn merge(&self, incoming: Vec<Stored>, now: Time) -> usize {
        let mut changed = 0;
        {
            let mut entries = self.entries.lock();
            for (key, entry) in incoming.into_iter().map(Stored::into_entry) {
                if entry.expires_at <= now
                    || entries
                        .get(&key)
                        .is_some_and(|prev| prev.timestamp >= entry.timestamp)
                {
                    continue;
                }
                entries.insert(key, entry);
                changed += 1;
            }
        }
        if changed > 0
            && let Err(err) = self.snapshot()
        {
            tracing::error!(%err, "cannot write the notification log snapshot");
        }
        changed
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
        let entry = Entry {
            firing,
            resolved,
            timestamp: now,
            expires_at,
        };
        // Handed to the cluster before the snapshot's fsync, so that peers
        // waiting out their position see it as early as possible.
        if let Some(broadcast) = self.broadcast.get() {
            broadcast(Stored::of(group_key, receiver, &entry));
        }
        self.entries
            .lock()
            .insert((group_key.to_string(), receiver.to_string()), entry);
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
        let stored = self.export();
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
    fn broadcasts_and_merges_the_later_entry() {
        let dir = tempfile::tempdir().unwrap();
        let a = NotificationLog::open(None).unwrap();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = sent.clone();
        a.set_broadcast(std::sync::Arc::new(move |e: Stored| sink.lock().push(e)));
        let now = Utc::now();
        let minute = Duration::from_secs(60);
        a.log("g", "r/webhook/0", set(&[1]), set(&[]), now, minute);
        assert_eq!(sent.lock().len(), 1);

        let path = dir.path().join("nflog.json");
        let b = NotificationLog::open(Some(path.clone())).unwrap();
        assert_eq!(b.merge(sent.lock().clone(), now), 1);
        assert_eq!(b.merge(a.export(), now), 0, "the same entry again");
        // Merged entries are persisted like local ones.
        let reopened = NotificationLog::open(Some(path)).unwrap();
        assert_eq!(
            reopened.query("g", "r/webhook/0").unwrap().firing,
            set(&[1])
        );
        // The later timestamp wins; an older one does not overwrite it.
        let later = now + chrono::Duration::seconds(5);
        b.log("g", "r/webhook/0", set(&[1, 2]), set(&[]), later, minute);
        assert_eq!(b.merge(a.export(), later), 0);
        assert_eq!(a.merge(b.export(), later), 1);
        assert_eq!(a.query("g", "r/webhook/0").unwrap().firing, set(&[1, 2]));
        // Expired entries are not taken.
        let mut old = b.export();
        old[0].group_key = "other".to_string();
        assert_eq!(a.merge(old, later + chrono::Duration::minutes(2)), 0);
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
