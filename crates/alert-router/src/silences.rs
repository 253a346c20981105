//! Silences: create, update, expire, query, match, and persist to a
//! snapshot file under the storage path. In a cluster every local change
//! is handed to the broadcast hook, and peers' silences are merged with
//! Alertmanager's rule (the later `updatedAt` wins).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::Utc;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::matcher::{MatchType, Matcher, Matchers};
use crate::model::{LabelSet, Time, is_zero, new_uuid};
use crate::persist;

/// A matcher as the API carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiMatcher {
    pub name: String,
    pub value: String,
    #[serde(rename = "isRegex")]
    pub is_regex: bool,
    #[serde(rename = "isEqual", default = "default_true")]
    pub is_equal: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SilenceState {
    Expired,
    Active,
    Pending,
}

impl SilenceState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Expired => "expired",
            Self::Active => "active",
            Self::Pending => "pending",
        }
    }
}

/// A silence.
#[derive(Debug, Clone)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: Time,
    pub ends_at: Time,
    pub updated_at: Time,
    pub created_by: String,
    pub comment: String,
    compiled: Matchers,
}

impl Silence {
    pub fn state(&self, now: Time) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.compiled.matches(labels)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SilenceError {
    #[error("silence not found")]
    NotFound,
    #[error("{0}")]
    Invalid(String),
    #[error("silence {0} already expired")]
    AlreadyExpired(String),
}

/// What a client posts.
#[derive(Debug, Clone)]
pub struct NewSilence {
    pub id: Option<String>,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: Time,
    pub ends_at: Time,
    pub created_by: String,
    pub comment: String,
}

fn compile(matchers: &[ApiMatcher]) -> Result<Matchers, String> {
    if matchers.is_empty() {
        return Err("at least one matcher required".to_string());
    }
    let mut out = Vec::new();
    for m in matchers {
        if !lucia_common::labels::is_valid_label_name(&m.name) {
            return Err(format!(
                "invalid label matcher: invalid label name {:?}",
                m.name
            ));
        }
        out.push(Matcher::new(
            MatchType::from_flags(m.is_equal, m.is_regex),
            &m.name,
            &m.value,
        )?);
    }
    if out.iter().all(|m| m.matches("")) {
        return Err("at least one matcher must not match the empty string".to_string());
    }
    Ok(Matchers(out))
}

/// A silence as the snapshot file and the cluster's messages carry it
/// (times in milliseconds since the epoch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub matchers: Vec<ApiMatcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub updated_at: i64,
    pub created_by: String,
    pub comment: String,
}

impl Stored {
    fn of(s: &Silence) -> Self {
        Stored {
            id: s.id.clone(),
            matchers: s.matchers.clone(),
            starts_at: persist::to_millis(&s.starts_at),
            ends_at: persist::to_millis(&s.ends_at),
            updated_at: persist::to_millis(&s.updated_at),
            created_by: s.created_by.clone(),
            comment: s.comment.clone(),
        }
    }

    /// The silence, or `None` when its matchers do not compile (a peer
    /// with other rules, or a damaged file).
    fn into_silence(self) -> Option<Silence> {
        let compiled = compile(&self.matchers).ok()?;
        Some(Silence {
            id: self.id,
            matchers: self.matchers,
            starts_at: persist::from_millis(self.starts_at),
            ends_at: persist::from_millis(self.ends_at),
            updated_at: persist::from_millis(self.updated_at),
            created_by: self.created_by,
            comment: self.comment,
            compiled,
        })
    }
}

/// Called with the silences a local change created or changed, so that
/// the cluster can send them to the peers.
pub type Broadcast = std::sync::Arc<dyn Fn(Vec<Stored>) + Send + Sync>;

/// The silences of one tenant.
pub struct Silences {
    inner: Mutex<BTreeMap<String, Silence>>,
    path: Option<PathBuf>,
    retention: Duration,
    broadcast: std::sync::OnceLock<Broadcast>,
}

impl Silences {
    /// Loads the snapshot at `path` (when given).
    pub fn open(path: Option<PathBuf>, retention: Duration) -> std::io::Result<Self> {
        let mut map = BTreeMap::new();
        if let Some(p) = &path
            && let Some(bytes) = persist::read(p)?
        {
            let stored: Vec<Stored> = serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("silence snapshot {}: {e}", p.display()),
                )
            })?;
            for s in stored.into_iter().filter_map(Stored::into_silence) {
                map.insert(s.id.clone(), s);
            }
        }
        Ok(Self {
            inner: Mutex::new(map),
            path,
            retention,
            broadcast: std::sync::OnceLock::new(),
        })
    }

    /// Sets the hook that receives every local change (once; the cluster
    /// sets it when the tenant is opened).
    pub fn set_broadcast(&self, broadcast: Broadcast) {
        let _ = self.broadcast.set(broadcast);
    }

    fn broadcast(&self, ids: &[&str]) {
        let Some(broadcast) = self.broadcast.get() else {
            return;
        };
        let changed: Vec<Stored> = {
            let map = self.inner.lock();
            ids.iter()
                .filter_map(|id| map.get(*id))
                .map(Stored::of)
                .collect()
        };
        if !changed.is_empty() {
            broadcast(changed);
        }
    }

    /// Every silence, for a peer's full-state sync.
    pub fn export(&self) -> Vec<Stored> {
        self.inner.lock().values().map(Stored::of).collect()
    }

    /// Merges silences from a peer: one wins when it is new here or was
    /// updated later than ours (Alertmanager's rule); silences past the
    /// retention are not taken. Persists when something changed and
    /// returns how many silences changed.
    pub fn merge(&self, incoming: Vec<Stored>, now: Time) -> usize {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut changed = 0;
        {
            let mut map = self.inner.lock();
            for s in incoming.into_iter().filter_map(Stored::into_silence) {
                if s.ends_at + retention <= now {
                    continue;
                }
                if map
                    .get(&s.id)
                    .is_some_and(|prev| prev.updated_at >= s.updated_at)
                {
                    continue;
                }
                map.insert(s.id.clone(), s);
                changed += 1;
            }
        }
        if changed > 0 {
            self.persist();
        }
        changed
    }

    /// Writes the snapshot.
    pub fn snapshot(&self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let stored = self.export();
        let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
        persist::write_atomic(path, &bytes)
    }

    fn persist(&self) {
        if let Err(err) = self.snapshot() {
            tracing::error!(%err, "cannot write the silence snapshot");
        }
    }

    pub fn all(&self) -> Vec<Silence> {
        self.inner.lock().values().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<Silence> {
        self.inner.lock().get(id).cloned()
    }

    /// The ids of the active silences that match `labels`.
    pub fn mutes(&self, labels: &LabelSet, now: Time) -> Vec<String> {
        self.inner
            .lock()
            .values()
            .filter(|s| s.state(now) == SilenceState::Active && s.matches(labels))
            .map(|s| s.id.clone())
            .collect()
    }

    /// Creates or updates a silence, returning its id (a new one when an
    /// active silence cannot be changed in place).
    pub fn set(&self, new: NewSilence) -> Result<String, SilenceError> {
        let now = Utc::now();
        let compiled = compile(&new.matchers).map_err(SilenceError::Invalid)?;
        if is_zero(&new.starts_at) {
            return Err(SilenceError::Invalid(
                "invalid zero start timestamp".to_string(),
            ));
        }
        if is_zero(&new.ends_at) {
            return Err(SilenceError::Invalid(
                "invalid zero end timestamp".to_string(),
            ));
        }
        if new.ends_at <= new.starts_at {
            return Err(SilenceError::Invalid(
                "start time must be before end time".to_string(),
            ));
        }
        if new.ends_at < now {
            return Err(SilenceError::Invalid(
                "end time can't be in the past".to_string(),
            ));
        }
        let mut silence = Silence {
            id: String::new(),
            matchers: new.matchers,
            starts_at: new.starts_at.max(now),
            ends_at: new.ends_at,
            updated_at: now,
            created_by: new.created_by,
            comment: new.comment,
            compiled,
        };
        let mut map = self.inner.lock();
        // The silence replaced by a new one (expired), for the broadcast.
        let mut replaced = None;
        let id = match new.id.filter(|id| !id.is_empty()) {
            Some(id) => {
                let prev = map.get(&id).cloned().ok_or(SilenceError::NotFound)?;
                if can_update(&prev, &silence, now) {
                    silence.id = id.clone();
                    silence.updated_at = later_update(prev.updated_at, now);
                    // An active silence keeps its start.
                    if prev.state(now) == SilenceState::Active {
                        silence.starts_at = prev.starts_at;
                    }
                    map.insert(id.clone(), silence);
                    id
                } else {
                    if prev.state(now) != SilenceState::Expired
                        && let Some(p) = map.get_mut(&id)
                    {
                        expire_in_place(p, now);
                        replaced = Some(id.clone());
                    }
                    let new_id = new_uuid();
                    silence.id = new_id.clone();
                    map.insert(new_id.clone(), silence);
                    new_id
                }
            }
            None => {
                let new_id = new_uuid();
                silence.id = new_id.clone();
                map.insert(new_id.clone(), silence);
                new_id
            }
        };
        drop(map);
        self.persist();
        let mut changed = vec![id.as_str()];
        changed.extend(replaced.as_deref());
        self.broadcast(&changed);
        Ok(id)
    }

    pub fn expire(&self, id: &str) -> Result<(), SilenceError> {
        let now = Utc::now();
        let mut map = self.inner.lock();
        let s = map.get_mut(id).ok_or(SilenceError::NotFound)?;
        if s.state(now) == SilenceState::Expired {
            return Err(SilenceError::AlreadyExpired(id.to_string()));
        }
        expire_in_place(s, now);
        drop(map);
        self.persist();
        self.broadcast(&[id]);
        Ok(())
    }

    /// Drops silences expired for longer than the retention; returns how
    /// many were dropped.
    pub fn gc(&self, now: Time) -> usize {
        let retention = chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        let mut map = self.inner.lock();
        let before = map.len();
        map.retain(|_, s| s.ends_at + retention > now);
        let dropped = before - map.len();
        drop(map);
        if dropped > 0 {
            self.persist();
        }
        dropped
    }

    /// Counts per state, for metrics.
    pub fn counts(&self, now: Time) -> [(SilenceState, i64); 3] {
        let mut c = [
            (SilenceState::Active, 0),
            (SilenceState::Pending, 0),
            (SilenceState::Expired, 0),
        ];
        for s in self.inner.lock().values() {
            let st = s.state(now);
            if let Some(slot) = c.iter_mut().find(|(k, _)| *k == st) {
                slot.1 += 1;
            }
        }
        c
    }
}

fn expire_in_place(s: &mut Silence, now: Time) {
    if s.state(now) == SilenceState::Pending {
        s.starts_at = now;
    }
    s.ends_at = now;
    s.updated_at = later_update(s.updated_at, now);
}

/// The `updatedAt` of a change to a silence last updated at `prev`: later
/// than `prev` at the millisecond precision that is stored and sent, so
/// that peers (where the later update wins) take a change made within the
/// same millisecond.
fn later_update(prev: Time, now: Time) -> Time {
    if persist::to_millis(&now) > persist::to_millis(&prev) {
        now
    } else {
        persist::from_millis(persist::to_millis(&prev) + 1)
    }
}

/// Alertmanager's `canUpdate`: same matchers, and the change does not
/// rewrite the past.
fn can_update(prev: &Silence, next: &Silence, now: Time) -> bool {
    if prev.matchers != next.matchers {
        return false;
    }
    match prev.state(now) {
        SilenceState::Active => next.ends_at >= now,
        SilenceState::Pending => next.starts_at >= now,
        SilenceState::Expired => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_silence(name: &str, value: &str, hours: i64) -> NewSilence {
        let now = Utc::now();
        NewSilence {
            id: None,
            matchers: vec![ApiMatcher {
                name: name.to_string(),
                value: value.to_string(),
                is_regex: false,
                is_equal: true,
            }],
            starts_at: now,
            ends_at: now + chrono::Duration::hours(hours),
            created_by: "me".to_string(),
            comment: "test".to_string(),
        }
    }

    #[test]
    fn create_match_expire_and_persist() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("silences.json");
        let s = Silences::open(Some(path.clone()), Duration::from_secs(3600)).unwrap();
        let id = s.set(new_silence("alertname", "A", 1)).unwrap();
        let labels: LabelSet = [("alertname".to_string(), "A".to_string())].into();
        assert_eq!(s.mutes(&labels, Utc::now()), vec![id.clone()]);
        // Extending an active silence keeps its id.
        let mut update = new_silence("alertname", "A", 2);
        update.id = Some(id.clone());
        assert_eq!(s.set(update).unwrap(), id);
        // Changing the matchers makes a new silence and expires the old one.
        let mut update = new_silence("alertname", "B", 2);
        update.id = Some(id.clone());
        let id2 = s.set(update).unwrap();
        assert_ne!(id2, id);
        assert_eq!(s.get(&id).unwrap().state(Utc::now()), SilenceState::Expired);
        s.expire(&id2).unwrap();
        assert!(matches!(
            s.expire(&id2),
            Err(SilenceError::AlreadyExpired(_))
        ));
        assert_eq!(s.expire("nope"), Err(SilenceError::NotFound));
        let reopened = Silences::open(Some(path), Duration::from_secs(3600)).unwrap();
        assert_eq!(reopened.all().len(), 2);
        assert!(reopened.mutes(&labels, Utc::now()).is_empty());
    }

    #[test]
    fn broadcasts_local_changes_and_merges_the_later_update() {
        let a = Silences::open(None, Duration::from_secs(3600)).unwrap();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = sent.clone();
        a.set_broadcast(std::sync::Arc::new(move |changed: Vec<Stored>| {
            sink.lock().extend(changed)
        }));
        let id = a.set(new_silence("alertname", "A", 1)).unwrap();
        assert_eq!(sent.lock().len(), 1);
        // Replacing a silence sends the new one and the expired old one.
        let mut update = new_silence("alertname", "B", 1);
        update.id = Some(id.clone());
        let id2 = a.set(update).unwrap();
        let ids: Vec<String> = sent.lock().iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, vec![id.clone(), id2.clone(), id.clone()]);

        // A peer takes them; merging again changes nothing.
        let b = Silences::open(None, Duration::from_secs(3600)).unwrap();
        let now = Utc::now();
        assert_eq!(b.merge(a.export(), now), 2);
        assert_eq!(b.merge(a.export(), now), 0);
        let labels: LabelSet = [("alertname".to_string(), "B".to_string())].into();
        assert_eq!(b.mutes(&labels, now), vec![id2.clone()]);
        // The later updatedAt wins, whichever side it comes from (an
        // update within the same millisecond still counts as later).
        b.expire(&id2).unwrap();
        assert!(b.get(&id2).unwrap().updated_at > a.get(&id2).unwrap().updated_at);
        let mut stale = a.export();
        assert_eq!(b.merge(stale.clone(), Utc::now()), 0);
        assert!(b.mutes(&labels, Utc::now()).is_empty());
        assert_eq!(a.merge(b.export(), Utc::now()), 1);
        assert!(a.mutes(&labels, Utc::now()).is_empty());
        // Silences past the retention and broken ones are not taken.
        for s in &mut stale {
            s.id = new_uuid();
            s.ends_at -= 2 * 3600 * 1000;
        }
        stale[0].matchers.clear();
        assert_eq!(b.merge(stale, Utc::now()), 0);
    }

    #[test]
    fn rejects_bad_silences() {
        let s = Silences::open(None, Duration::from_secs(3600)).unwrap();
        let mut bad = new_silence("alertname", "", 1);
        assert!(
            s.set(bad.clone())
                .unwrap_err()
                .to_string()
                .contains("empty string")
        );
        bad = new_silence("alertname", "A", -1);
        assert!(s.set(bad).is_err());
        let mut bad = new_silence("alertname", "A", 1);
        bad.matchers.clear();
        assert!(s.set(bad).is_err());
        let mut bad = new_silence("alertname", "A", 1);
        bad.id = Some("unknown".to_string());
        assert_eq!(s.set(bad), Err(SilenceError::NotFound));
    }
}
