//! Splitting targets between tsdb members: each target's key is owned by
//! exactly one member of a consistent-hash ring; pools re-check ownership
//! whenever membership changes.

use std::sync::Arc;

use lucia_common::Shutdown;
use lucia_common::ring::Ring;
use tokio::sync::watch;

/// Which targets this member scrapes.
#[derive(Clone)]
pub struct Sharding {
    owns: Arc<dyn Fn(u64) -> bool + Send + Sync>,
    changes: watch::Receiver<()>,
}

impl Sharding {
    /// `owns(target_key)` says whether this member scrapes the target; a
    /// send on `changes` makes every pool ask again.
    pub fn new(
        owns: impl Fn(u64) -> bool + Send + Sync + 'static,
        changes: watch::Receiver<()>,
    ) -> Self {
        Self {
            owns: Arc::new(owns),
            changes,
        }
    }

    /// Ownership by a token ring: the first ACTIVE instance clockwise from
    /// the target's token owns it. `instance_id` is this member's ring id.
    /// Follows the ring until `shutdown`.
    pub fn from_ring(ring: Ring, instance_id: impl Into<String>, shutdown: Shutdown) -> Self {
        let id: String = instance_id.into();
        let (tx, rx) = watch::channel(());
        let mut watcher = ring.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = watcher.changed() => {
                        if !changed { return; }
                        tx.send_replace(());
                    }
                }
            }
        });
        Self::new(
            move |key| {
                ring.snapshot()
                    .replicas(token(key), 1)
                    .first()
                    .is_some_and(|owner| owner.id == id)
            },
            rx,
        )
    }

    pub fn owns(&self, key: u64) -> bool {
        (self.owns)(key)
    }

    pub(crate) fn changes(&self) -> watch::Receiver<()> {
        self.changes.clone()
    }
}

/// The ring token of a target key.
pub fn token(key: u64) -> u32 {
    (key ^ (key >> 32)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use lucia_common::ring::{InProcessRing, InstanceDesc, InstanceState};

    #[tokio::test]
    async fn ring_members_split_keys_exactly() {
        let ring = InProcessRing::get("scrape-sharding-test");
        let member = |id: &str, tokens: Vec<u32>| InstanceDesc {
            id: id.into(),
            addr: format!("{id}:1"),
            tokens,
            state: InstanceState::Active,
            heartbeat: 0,
        };
        ring.upsert(member("a", vec![0, 1 << 30, 3 << 30]));
        let shutdown = Shutdown::new();
        let a = Sharding::from_ring(ring.ring(), "a", shutdown.clone());
        let b = Sharding::from_ring(ring.ring(), "b", shutdown.clone());
        let keys: Vec<u64> = (0..500u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        assert!(keys.iter().all(|k| a.owns(*k) && !b.owns(*k)));
        let mut changes = a.changes();
        changes.borrow_and_update();
        ring.upsert(member("b", vec![2 << 30, 1 << 31 | 1 << 29]));
        tokio::time::timeout(std::time::Duration::from_secs(30), changes.changed())
            .await
            .unwrap()
            .unwrap();
        let owned_by_a = keys.iter().filter(|k| a.owns(**k)).count();
        assert!(
            keys.iter().all(|k| a.owns(*k) != b.owns(*k)),
            "exactly one owner"
        );
        assert!(owned_by_a > 0 && owned_by_a < keys.len());
        ring.remove("a");
        tokio::time::timeout(std::time::Duration::from_secs(30), changes.changed())
            .await
            .unwrap()
            .unwrap();
        assert!(keys.iter().all(|k| b.owns(*k) && !a.owns(*k)));
        shutdown.cancel();
    }
}
