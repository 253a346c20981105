//! The membership table: which peers exist, which are alive, and whom to
//! probe next. Pure bookkeeping over an injected clock, so that the rules
//! are unit-tested without sockets.
//!
//! A member is alive while something was heard from it (a message it sent,
//! or its answer to our probe) within the failure timeout. Members learned
//! from another peer's member list are probed but do not count as alive
//! until they answer themselves. A failed member is probed again every
//! reconnect interval and forgotten after the reconnect timeout, as
//! memberlist does with Alertmanager's flags of those names.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::PeerInfo;

/// The timings that decide liveness.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// A member not heard from for this long is failed.
    pub failure_timeout: Duration,
    /// How often a failed member or an unanswered seed is probed.
    pub reconnect_interval: Duration,
    /// How long a failed member is kept (and probed) before it is dropped.
    pub reconnect_timeout: Duration,
}

#[derive(Debug)]
struct Member {
    address: String,
    /// When a message of it or an answer of it last arrived.
    last_seen: Option<Instant>,
    /// When it became known.
    known_since: Instant,
    last_probe: Option<Instant>,
}

/// A seed: an address from `--cluster.peer` or Consul.
#[derive(Debug, Default)]
struct Seed {
    /// The name that answered at this address.
    name: Option<String>,
    last_probe: Option<Instant>,
}

#[derive(Debug)]
pub struct Members {
    self_name: String,
    self_address: String,
    timing: Timing,
    members: BTreeMap<String, Member>,
    /// Seeds from the flags (kept) and from Consul (replaced on each
    /// answer of Consul).
    static_seeds: BTreeMap<String, Seed>,
    discovered_seeds: BTreeMap<String, Seed>,
}

impl Members {
    pub fn new(self_name: &str, self_address: &str, timing: Timing, seeds: &[String]) -> Self {
        Self {
            self_name: self_name.to_string(),
            self_address: self_address.to_string(),
            timing,
            members: BTreeMap::new(),
            static_seeds: seeds
                .iter()
                .filter(|s| s.as_str() != self_address)
                .map(|s| (s.clone(), Seed::default()))
                .collect(),
            discovered_seeds: BTreeMap::new(),
        }
    }

    fn is_alive(&self, m: &Member, now: Instant) -> bool {
        m.last_seen
            .is_some_and(|t| now.saturating_duration_since(t) < self.timing.failure_timeout)
    }

    /// Records that `peer` spoke (a message or an answer); true when it
    /// was not alive before (new, or back from failure), so that the
    /// caller exchanges the full state with it.
    pub fn heard_from(&mut self, peer: &PeerInfo, now: Instant) -> bool {
        if peer.name == self.self_name {
            return false;
        }
        // Another name at the same address is a process that restarted
        // there (names are new at each start): the old one is gone.
        self.members
            .retain(|name, m| *name == peer.name || m.address != peer.address);
        let was_alive = self
            .members
            .get(&peer.name)
            .is_some_and(|m| self.is_alive(m, now));
        let m = self
            .members
            .entry(peer.name.clone())
            .or_insert_with(|| Member {
                address: peer.address.clone(),
                last_seen: None,
                known_since: now,
                last_probe: None,
            });
        m.address = peer.address.clone();
        m.last_seen = Some(now);
        !was_alive
    }

    /// Takes note of the members another peer reports alive; they are
    /// probed but only count once they answer themselves.
    pub fn learned(&mut self, peers: &[PeerInfo], now: Instant) {
        for p in peers {
            if p.name == self.self_name
                || p.address == self.self_address
                || self.members.contains_key(&p.name)
                || self.members.values().any(|m| m.address == p.address)
            {
                continue;
            }
            self.members.insert(
                p.name.clone(),
                Member {
                    address: p.address.clone(),
                    last_seen: None,
                    known_since: now,
                    last_probe: None,
                },
            );
        }
    }

    /// A member that said it leaves.
    pub fn left(&mut self, name: &str) {
        self.members.remove(name);
    }

    /// Records who answered at a seed address (our own name marks an
    /// address of ours, which is then never probed again).
    pub fn seed_answered(&mut self, address: &str, name: &str) {
        for seeds in [&mut self.static_seeds, &mut self.discovered_seeds] {
            if let Some(seed) = seeds.get_mut(address) {
                seed.name = Some(name.to_string());
            }
        }
    }

    /// Replaces the seeds found in Consul.
    pub fn set_discovered(&mut self, addresses: BTreeSet<String>) {
        let mut old = std::mem::take(&mut self.discovered_seeds);
        self.discovered_seeds = addresses
            .into_iter()
            .filter(|a| *a != self.self_address)
            .map(|a| {
                let seed = old.remove(&a).unwrap_or_default();
                (a, seed)
            })
            .collect();
    }

    /// The alive members, this one included, sorted by name: the order
    /// that gives each member its position.
    pub fn alive(&self, now: Instant) -> Vec<PeerInfo> {
        let mut out: Vec<PeerInfo> = self
            .members
            .iter()
            .filter(|(_, m)| self.is_alive(m, now))
            .map(|(name, m)| PeerInfo {
                name: name.clone(),
                address: m.address.clone(),
            })
            .collect();
        out.push(PeerInfo {
            name: self.self_name.clone(),
            address: self.self_address.clone(),
        });
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The alive members other than this one.
    pub fn alive_peers(&self, now: Instant) -> Vec<PeerInfo> {
        let mut all = self.alive(now);
        all.retain(|p| p.name != self.self_name);
        all
    }

    /// This member's index among the alive members sorted by name
    /// (Alertmanager's `Peer.Position`).
    pub fn position(&self, now: Instant) -> usize {
        self.alive(now)
            .iter()
            .position(|p| p.name == self.self_name)
            .unwrap_or(0)
    }

    /// How many known members are failed (not heard from recently).
    pub fn failed(&self, now: Instant) -> usize {
        self.members
            .values()
            .filter(|m| m.last_seen.is_some() && !self.is_alive(m, now))
            .count()
    }

    /// The addresses to probe now: alive and newly learned members at
    /// every tick; failed members and seeds nobody known answers at once
    /// per reconnect interval. Drops members failed for longer than the
    /// reconnect timeout.
    pub fn probe_targets(&mut self, now: Instant) -> Vec<String> {
        let timing = self.timing;
        self.members.retain(|_, m| {
            let since = m.last_seen.unwrap_or(m.known_since);
            now.saturating_duration_since(since) < timing.reconnect_timeout
        });
        let due = |last: Option<Instant>| {
            last.is_none_or(|t| now.saturating_duration_since(t) >= timing.reconnect_interval)
        };
        let mut out = Vec::new();
        for m in self.members.values_mut() {
            let recent = now.saturating_duration_since(m.last_seen.unwrap_or(m.known_since))
                < timing.failure_timeout;
            if recent || due(m.last_probe) {
                m.last_probe = Some(now);
                out.push(m.address.clone());
            }
        }
        let known: BTreeSet<&String> = self.members.keys().collect();
        let mut seed_targets = Vec::new();
        for seeds in [&mut self.static_seeds, &mut self.discovered_seeds] {
            for (address, seed) in seeds.iter_mut() {
                let covered = seed
                    .name
                    .as_ref()
                    .is_some_and(|n| *n == self.self_name || known.contains(n));
                if !covered && due(seed.last_probe) {
                    seed.last_probe = Some(now);
                    seed_targets.push(address.clone());
                }
            }
        }
        for address in seed_targets {
            if !out.contains(&address) {
                out.push(address);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(name: &str, address: &str) -> PeerInfo {
        PeerInfo {
            name: name.to_string(),
            address: address.to_string(),
        }
    }

    fn timing() -> Timing {
        Timing {
            failure_timeout: Duration::from_secs(5),
            reconnect_interval: Duration::from_secs(10),
            reconnect_timeout: Duration::from_secs(60),
        }
    }

    #[test]
    fn liveness_and_position() {
        let t0 = Instant::now();
        let mut m = Members::new("B", "b:9094", timing(), &["a:9094".to_string()]);
        assert_eq!(m.position(t0), 0);
        // The seed is probed at once, then only each reconnect interval.
        assert_eq!(m.probe_targets(t0), vec!["a:9094".to_string()]);
        assert!(m.probe_targets(t0 + Duration::from_secs(1)).is_empty());
        assert!(m.heard_from(&peer("A", "a:9094"), t0));
        m.seed_answered("a:9094", "A");
        assert!(!m.heard_from(&peer("A", "a:9094"), t0));
        assert!(!m.heard_from(&peer("B", "b:9094"), t0), "self is no member");
        assert_eq!(m.position(t0), 1);
        assert_eq!(m.alive(t0), vec![peer("A", "a:9094"), peer("B", "b:9094")]);
        // A member learned from a peer is probed but not alive yet.
        m.learned(&[peer("C", "c:9094"), peer("B", "b:9094")], t0);
        assert_eq!(m.alive(t0).len(), 2);
        let targets = m.probe_targets(t0 + Duration::from_secs(1));
        assert_eq!(targets, vec!["a:9094".to_string(), "c:9094".to_string()]);
        // A silent member fails after the failure timeout: B moves up.
        let later = t0 + Duration::from_secs(6);
        assert_eq!(m.position(later), 0);
        assert_eq!(m.failed(later), 1);
        // Failed members are probed once per reconnect interval.
        assert_eq!(m.probe_targets(later).len(), 0);
        assert_eq!(
            m.probe_targets(t0 + Duration::from_secs(11)),
            vec!["a:9094".to_string(), "c:9094".to_string()]
        );
        // Coming back makes it alive again (and asks for a full sync).
        assert!(m.heard_from(&peer("A", "a:9094"), later));
        assert_eq!(m.position(later), 1);
        // And a failed member is dropped after the reconnect timeout.
        // The seed nobody known answers at any more is probed again.
        let much_later = t0 + Duration::from_secs(120);
        assert_eq!(m.probe_targets(much_later), vec!["a:9094".to_string()]);
        assert_eq!(m.alive(much_later).len(), 1);
        assert_eq!(m.failed(much_later), 0);
    }

    #[test]
    fn restart_under_a_new_name_replaces_the_old_one_and_leave_removes() {
        let t0 = Instant::now();
        let mut m = Members::new("B", "b:9094", timing(), &[]);
        m.heard_from(&peer("A1", "a:9094"), t0);
        m.heard_from(&peer("A2", "a:9094"), t0);
        assert_eq!(m.alive(t0), vec![peer("A2", "a:9094"), peer("B", "b:9094")]);
        // A stale report of the old name does not bring it back.
        m.learned(&[peer("A1", "a:9094")], t0);
        assert_eq!(m.probe_targets(t0), vec!["a:9094".to_string()]);
        m.left("A2");
        assert_eq!(m.alive(t0).len(), 1);
    }

    #[test]
    fn discovered_seeds_are_replaced_and_own_address_skipped() {
        let t0 = Instant::now();
        let mut m = Members::new("B", "b:9094", timing(), &["b:9094".to_string()]);
        assert!(m.probe_targets(t0).is_empty());
        m.set_discovered(["b:9094".to_string(), "c:9094".to_string()].into());
        assert_eq!(m.probe_targets(t0), vec!["c:9094".to_string()]);
        m.seed_answered("c:9094", "B");
        m.set_discovered(["c:9094".to_string()].into());
        // It answered with our own name: never probed again.
        assert!(m.probe_targets(t0 + Duration::from_secs(30)).is_empty());
    }
}
