//! The running ruler: one task per group evaluating on the group's
//! interval at consistent times, rule groups from files and from the Loki
//! ruler API (kept under the data dir), and the notifier.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lucia_common::Shutdown;
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::group::{EvalContext, Group};
use crate::remote::{Http, HttpAppender, HttpEngine, Notifier};
use crate::rulefile::{self, Language, RuleGroup};
use crate::{Error, Labels};

/// Settings of the evaluation loop.
#[derive(Clone)]
pub struct Settings {
    pub evaluation_interval: Duration,
    pub external_labels: Labels,
    pub external_url: String,
    pub resend_delay: Duration,
    pub outage_tolerance: Duration,
    pub grace_period: Duration,
    /// Where the Loki ruler API keeps its namespaces.
    pub rules_dir: PathBuf,
}

/// (tenant, file or namespace, group name).
pub type GroupKey = (String, String, String);

struct Running {
    state: Arc<Mutex<Group>>,
    fingerprint: String,
    stop: Shutdown,
    task: JoinHandle<()>,
}

pub struct Manager {
    pub settings: Settings,
    http: Http,
    notifier: Notifier,
    shutdown: Shutdown,
    /// Groups from the rule files (tenant `fake`).
    file_groups: Mutex<Vec<RuleGroup>>,
    running: tokio::sync::Mutex<BTreeMap<GroupKey, Running>>,
    /// Snapshot handles for the API.
    states: Mutex<BTreeMap<GroupKey, Arc<Mutex<Group>>>>,
}

/// The tenant of rule files.
pub const FILE_TENANT: &str = "fake";

fn fingerprint(g: &RuleGroup) -> String {
    format!("{:?}|{:?}", g.source, g.language)
}

/// Prometheus' evaluation offset of a group within its interval, from a
/// hash of its file and name, so groups spread but keep consistent times.
fn eval_offset(key: &GroupKey, interval_ms: i64) -> i64 {
    let h = xxhash_rust::xxh64::xxh64(
        format!("{}\u{0}{}\u{0}{}", key.0, key.1, key.2).as_bytes(),
        0,
    );
    (h % interval_ms.max(1) as u64) as i64
}

/// The first evaluation time strictly after `now` for a group with
/// `interval` and `offset`: aligned to `interval`, shifted by `offset`.
pub fn next_eval(now: i64, interval: i64, offset: i64) -> i64 {
    let adj = now - offset;
    let base = adj - adj.rem_euclid(interval);
    base + offset + interval
}

fn now_ms() -> i64 {
    lucia_common::time::now_nanos() / 1_000_000
}

fn namespace_file(dir: &Path, tenant: &str, namespace: &str) -> PathBuf {
    let enc: String = form_urlencoded::byte_serialize(namespace.as_bytes()).collect();
    dir.join(tenant).join(format!("{enc}.yaml"))
}

impl Manager {
    pub fn new(
        settings: Settings,
        http: Http,
        notifier: Notifier,
        shutdown: Shutdown,
    ) -> Arc<Self> {
        Arc::new(Self {
            settings,
            http,
            notifier,
            shutdown,
            file_groups: Mutex::new(Vec::new()),
            running: tokio::sync::Mutex::new(BTreeMap::new()),
            states: Mutex::new(BTreeMap::new()),
        })
    }

    /// Loads the rule files matching `globs`; every error is reported.
    pub fn load_files(&self, globs: &[String]) -> Result<(), Error> {
        let mut groups = Vec::new();
        let mut errors = Vec::new();
        for path in expand_globs(globs)? {
            match rulefile::load_file(&path, Language::Promql) {
                Ok(mut g) => groups.append(&mut g),
                Err(errs) => errors.extend(errs),
            }
        }
        if !errors.is_empty() {
            return Err(Error::Rules(errors));
        }
        *self.file_groups.lock() = groups;
        Ok(())
    }

    /// Every group that should run: the files' and the API namespaces'.
    fn desired(&self) -> Vec<(String, RuleGroup)> {
        let mut out: Vec<(String, RuleGroup)> = self
            .file_groups
            .lock()
            .iter()
            .map(|g| (FILE_TENANT.to_string(), g.clone()))
            .collect();
        for (tenant, namespace, groups) in self.api_namespaces() {
            let _ = namespace;
            out.extend(groups.into_iter().map(|g| (tenant.clone(), g)));
        }
        out
    }

    /// (tenant, namespace, groups) of every namespace stored by the API.
    pub fn api_namespaces(&self) -> Vec<(String, String, Vec<RuleGroup>)> {
        let mut out = Vec::new();
        let Ok(tenants) = std::fs::read_dir(&self.settings.rules_dir) else {
            return out;
        };
        for tenant in tenants.flatten() {
            let tenant_name = tenant.file_name().to_string_lossy().to_string();
            let Ok(files) = std::fs::read_dir(tenant.path()) else {
                continue;
            };
            let mut files: Vec<_> = files.flatten().collect();
            files.sort_by_key(|f| f.file_name());
            for f in files {
                let name = f.file_name().to_string_lossy().to_string();
                let Some(enc) = name.strip_suffix(".yaml") else {
                    continue;
                };
                let namespace: String = form_urlencoded::parse(format!("n={enc}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                match rulefile::parse_file(&namespace, &text, Language::Logql) {
                    Ok(groups) => out.push((tenant_name.clone(), namespace, groups)),
                    Err(errs) => {
                        for e in errs {
                            tracing::error!(tenant = %tenant_name, error = %e, "ruler: stored rule namespace is invalid");
                        }
                    }
                }
            }
        }
        out
    }

    /// Stores (adds or replaces) `group` in `namespace` of `tenant`.
    pub fn set_group(&self, tenant: &str, namespace: &str, group: RuleGroup) -> Result<(), Error> {
        let mut groups = self.namespace_groups(tenant, namespace);
        match groups.iter_mut().find(|g| g.name == group.name) {
            Some(g) => *g = group,
            None => groups.push(group),
        }
        self.write_namespace(tenant, namespace, &groups)
    }

    /// Deletes a group, or the whole namespace when `group` is `None`;
    /// false when there was nothing to delete.
    pub fn delete(
        &self,
        tenant: &str,
        namespace: &str,
        group: Option<&str>,
    ) -> Result<bool, Error> {
        let groups = self.namespace_groups(tenant, namespace);
        let kept: Vec<RuleGroup> = match group {
            Some(name) => groups.iter().filter(|g| g.name != name).cloned().collect(),
            None => Vec::new(),
        };
        if kept.len() == groups.len() {
            return Ok(false);
        }
        self.write_namespace(tenant, namespace, &kept)?;
        Ok(true)
    }

    pub fn namespace_groups(&self, tenant: &str, namespace: &str) -> Vec<RuleGroup> {
        let path = namespace_file(&self.settings.rules_dir, tenant, namespace);
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| rulefile::parse_file(namespace, &text, Language::Logql).ok())
            .unwrap_or_default()
    }

    fn write_namespace(
        &self,
        tenant: &str,
        namespace: &str,
        groups: &[RuleGroup],
    ) -> Result<(), Error> {
        let path = namespace_file(&self.settings.rules_dir, tenant, namespace);
        if groups.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
            return Ok(());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut text = String::from("groups:\n");
        for g in groups {
            rulefile::group_to_yaml(&g.source, "  ", &mut text);
        }
        let tmp = path.with_extension("yaml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Starts, replaces and stops group tasks to match the rule files and
    /// the API namespaces. State carries over to a changed group.
    pub async fn sync(self: &Arc<Self>) {
        let desired = self.desired();
        let mut running = self.running.lock().await;
        let mut wanted: HashMap<GroupKey, (String, RuleGroup)> = HashMap::new();
        for (tenant, g) in desired {
            let key = (tenant.clone(), g.file.clone(), g.name.clone());
            wanted.insert(key, (tenant, g));
        }
        let stale: Vec<GroupKey> = running
            .iter()
            .filter(|(k, r)| {
                wanted
                    .get(*k)
                    .is_none_or(|(_, g)| fingerprint(g) != r.fingerprint)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut previous: HashMap<GroupKey, Group> = HashMap::new();
        for key in stale {
            if let Some(r) = running.remove(&key) {
                r.stop.cancel();
                let _ = r.task.await;
                previous.insert(key.clone(), r.state.lock().clone());
                self.states.lock().remove(&key);
            }
        }
        for (key, (tenant, def)) in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let fingerprint = fingerprint(&def);
            let mut group = Group::new(def, tenant, self.settings.evaluation_interval);
            let restore = match previous.get(&key) {
                Some(old) => {
                    group.copy_state(old);
                    false
                }
                None => true,
            };
            let state = Arc::new(Mutex::new(group));
            let stop = self.shutdown.child_token();
            let task = tokio::spawn(self.clone().run_group(
                key.clone(),
                state.clone(),
                stop.clone(),
                restore,
            ));
            self.states.lock().insert(key.clone(), state.clone());
            running.insert(
                key,
                Running {
                    state,
                    fingerprint,
                    stop,
                    task,
                },
            );
        }
    }

    /// Snapshots of every group, in key order.
    pub fn groups(&self) -> Vec<Group> {
        self.states
            .lock()
            .values()
            .map(|g| g.lock().clone())
            .collect()
    }

    /// Stops every group task.
    pub async fn stop(&self) {
        let mut running = self.running.lock().await;
        for (_, r) in std::mem::take(&mut *running) {
            r.stop.cancel();
            let _ = r.task.await;
        }
    }

    async fn run_group(
        self: Arc<Self>,
        key: GroupKey,
        state: Arc<Mutex<Group>>,
        stop: Shutdown,
        mut restore: bool,
    ) {
        let (interval, language, tenant) = {
            let g = state.lock();
            (g.interval, g.def.language, g.tenant.clone())
        };
        let interval_ms = (interval.as_millis() as i64).max(1);
        let offset = eval_offset(&key, interval_ms);
        let handle = tokio::runtime::Handle::current();
        let ctx = Arc::new(EvalContext {
            engine: Arc::new(HttpEngine {
                http: self.http.clone(),
                language,
                tenant: tenant.clone(),
                handle: handle.clone(),
            }),
            appender: Arc::new(HttpAppender {
                http: self.http.clone(),
                tenant: tenant.clone(),
                handle,
            }),
            external_labels: self.settings.external_labels.clone(),
            external_url: self.settings.external_url.clone(),
        });
        let mut first = true;
        let mut next = next_eval(now_ms(), interval_ms, offset);
        loop {
            let wait = Duration::from_millis((next - now_ms()).max(0) as u64);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            let ts = next;
            let mut group = state.lock().clone();
            let ctx2 = ctx.clone();
            let settings = self.settings.clone();
            let do_restore = restore;
            let joined = tokio::task::spawn_blocking(move || {
                group.eval(ts, &ctx2);
                if do_restore {
                    group.restore_for_state(
                        now_ms(),
                        ctx2.engine.as_ref(),
                        settings.outage_tolerance,
                        settings.grace_period,
                    );
                } else if first {
                    group.set_restored();
                }
                let alerts = group.alerts_to_send(ts, settings.resend_delay);
                (group, alerts)
            })
            .await;
            match joined {
                Ok((group, alerts)) => {
                    self.notifier.send(&tenant, alerts);
                    *state.lock() = group;
                }
                Err(e) => {
                    tracing::error!(group = %key.2, error = %e, "ruler: evaluation task failed")
                }
            }
            restore = false;
            first = false;
            next += interval_ms;
            let now = now_ms();
            if next <= now {
                let missed = (now - next) / interval_ms + 1;
                tracing::warn!(group = %key.2, missed, "ruler: group evaluation missed iterations");
                next += missed * interval_ms;
            }
        }
    }
}

/// Expands rule file globs (`*`, `?`, `[…]` in the file name).
pub fn expand_globs(globs: &[String]) -> Result<Vec<PathBuf>, Error> {
    let mut out = Vec::new();
    for pattern in globs {
        let path = Path::new(pattern);
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        if !name.contains(['*', '?', '[']) {
            out.push(path.to_path_buf());
            continue;
        }
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut re = String::from("^");
        for c in name.chars() {
            match c {
                '*' => re.push_str("[^/]*"),
                '?' => re.push_str("[^/]"),
                '[' | ']' => re.push(c),
                c => re.push_str(&regex::escape(&c.to_string())),
            }
        }
        re.push('$');
        let re = regex::Regex::new(&re)
            .map_err(|e| Error::Config(format!("bad rule file glob {pattern:?}: {e}")))?;
        let mut found: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| re.is_match(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .collect(),
            Err(_) => Vec::new(),
        };
        found.sort();
        out.extend(found);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_times_are_aligned_and_offset() {
        assert_eq!(next_eval(10_500, 1000, 0), 11_000);
        assert_eq!(next_eval(10_000, 1000, 0), 11_000);
        assert_eq!(next_eval(10_500, 1000, 200), 11_200);
        assert_eq!(next_eval(10_100, 1000, 200), 10_200);
        let key = ("fake".to_string(), "f".to_string(), "g".to_string());
        let o = eval_offset(&key, 60_000);
        assert!((0..60_000).contains(&o));
        assert_eq!(o, eval_offset(&key, 60_000));
    }

    #[test]
    fn globs_match_file_names() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.yml", "b.yml", "c.txt"] {
            std::fs::write(dir.path().join(n), "").unwrap();
        }
        let found = expand_globs(&[format!("{}/*.yml", dir.path().display())]).unwrap();
        assert_eq!(found.len(), 2);
    }
}
