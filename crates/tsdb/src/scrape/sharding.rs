//! Splitting targets between tsdb members: each target's key is owned by
//! exactly one member of a consistent-hash ring; pools re-check ownership
//! whenever membership changes.

use std::sync::Arc;
use std::time::Duration;

use lucia_common::Shutdown;
use lucia_common::ring::{Ring, RingSnapshot};
use parking_lot::RwLock;
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
    ///
    /// Hand-off: a member gives a target up as soon as its view of the ring
    /// says so, but takes one on only once the ring has been unchanged for
    /// `handoff` (also after its own start). As long as every member sees a
    /// ring change within `handoff` (Consul's blocking queries take well
    /// under a second), the old owner has stopped before the new one
    /// starts: a target is scraped by at most one member at a time, at the
    /// cost of a pause of about `handoff` when it moves.
    pub fn from_ring(
        ring: Ring,
        instance_id: impl Into<String>,
        handoff: Duration,
        shutdown: Shutdown,
    ) -> Self {
        let id: String = instance_id.into();
        let (tx, rx) = watch::channel(());
        let settled: Arc<RwLock<Option<Arc<RingSnapshot>>>> = Arc::new(RwLock::new(None));
        let mut watcher = ring.clone();
        let settler = settled.clone();
        tokio::spawn(async move {
            let mut settle_at = Some(tokio::time::Instant::now() + handoff);
            // What settles is the view the timer was started for, never a
            // newer one: a change the timer has not yet seen (both ready in
            // the same poll) must wait out its own hand-off.
            let mut pending = watcher.snapshot();
            loop {
                let deadline = settle_at;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    changed = watcher.changed() => {
                        if !changed { return; }
                        pending = watcher.snapshot();
                        settle_at = Some(tokio::time::Instant::now() + handoff);
                        tx.send_replace(());
                    }
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => {
                        *settler.write() = Some(pending.clone());
                        settle_at = None;
                        tx.send_replace(());
                    }
                }
            }
        });
        let owner_is_me = move |snapshot: &RingSnapshot, key: u64| {
            snapshot
                .replicas(token(key), 1)
                .first()
                .is_some_and(|owner| owner.id == id)
        };
        Self::new(
            move |key| {
                owner_is_me(&ring.snapshot(), key)
                    && settled
                        .read()
                        .as_ref()
                        .is_some_and(|snapshot| owner_is_me(snapshot, key))
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
        // Long enough that `a`, woken by the same ring change, has let go
        // before `b` takes over even on a loaded machine (300 ms was not).
        let handoff = Duration::from_secs(3);
        let a = Sharding::from_ring(ring.ring(), "a", handoff, shutdown.clone());
        let b = Sharding::from_ring(ring.ring(), "b", handoff, shutdown.clone());
        let keys: Vec<u64> = (0..500u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .collect();
        // Nothing is owned before the ring has settled once.
        assert!(keys.iter().all(|k| !a.owns(*k) && !b.owns(*k)));
        let settle = |s: &Sharding| {
            let mut changes = s.changes();
            async move {
                tokio::time::timeout(Duration::from_secs(30), changes.changed())
                    .await
                    .unwrap()
                    .unwrap();
            }
        };
        settle(&a).await;
        assert!(keys.iter().all(|k| a.owns(*k) && !b.owns(*k)));

        let mut changes = a.changes();
        changes.borrow_and_update();
        ring.upsert(member("b", vec![2 << 30, 1 << 31 | 1 << 29]));
        changes.changed().await.unwrap();
        // Right after the change: a has let go of what moves, b has not
        // taken it yet: never two owners.
        let moved: Vec<u64> = keys.iter().copied().filter(|k| !a.owns(*k)).collect();
        assert!(!moved.is_empty() && moved.len() < keys.len());
        assert!(keys.iter().all(|k| !(a.owns(*k) && b.owns(*k))));
        assert!(
            moved.iter().all(|k| !b.owns(*k)),
            "b waits for the hand-off"
        );
        // Once both have settled, exactly one owner per key; never two on
        // the way there.
        let eventually = |cond: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                assert!(keys.iter().all(|k| !(a.owns(*k) && b.owns(*k))));
                if cond() {
                    return;
                }
                assert!(std::time::Instant::now() < deadline, "ring did not settle");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        eventually(&|| keys.iter().all(|k| a.owns(*k) != b.owns(*k)));
        ring.remove("a");
        eventually(&|| keys.iter().all(|k| b.owns(*k)));
        assert!(keys.iter().all(|k| b.owns(*k) && !a.owns(*k)));
        shutdown.cancel();
    }
}
