//! The object store for flushed chunks and their index.
//!
//! Layout, under the bucket or directory root:
//! - `<tenant>/chunks/<fingerprint hex>/<from>-<through>-<crc32 hex>`: one
//!   chunk object (see [`crate::chunk`]); the key is unique per content, so a
//!   retried PUT rewrites the same object.
//! - `<tenant>/index/<day>/<instance>-<unix nanos>-<seq>.json`: what one flush
//!   wrote that overlaps the day (Unix day number), as [`IndexFile`]. A
//!   stateless querier lists the days of a time range to find every chunk.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::TryStreamExt as _;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use serde::{Deserialize, Serialize};

use crate::chunk::{ChunkData, ChunkError, Entry, LineFilter};

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// The `storage` config section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `filesystem` (default, under `<data.dir>/chunks`) or `s3`.
    pub backend: StorageBackend,
    pub filesystem: FilesystemConfig,
    pub s3: Option<S3Config>,
    /// Prometheus' `storage.tsdb` section, so that a Prometheus
    /// configuration file is a valid Lucia config file.
    pub tsdb: PrometheusTsdbStorage,
}

/// Prometheus' `storage.tsdb` section (what tsdb uses of it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusTsdbStorage {
    pub out_of_order_time_window: Option<crate::duration::ConfigDuration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    #[default]
    Filesystem,
    S3,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilesystemConfig {
    pub directory: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Plain HTTP to the endpoint (local S3-compatible servers).
    pub insecure: bool,
    /// Same as `insecure` (object_store's name for it).
    pub allow_http: bool,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and moto need;
    /// defaults to true when an endpoint is set.
    pub force_path_style: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage: s3 backend selected but no storage.s3 section: set storage.s3.bucket")]
    MissingS3,
    #[error("storage: {0}")]
    ObjectStore(#[from] object_store::Error),
    #[error("storage directory {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("chunk {key}: {source}")]
    Chunk { key: String, source: ChunkError },
    #[error("index object {key} is not valid json: {reason}")]
    Index { key: String, reason: String },
}

/// One flushed chunk, as listed in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexEntry {
    /// The stream's labels in Prometheus text form.
    pub labels: String,
    /// Hex of the stable hash of the labels.
    pub fingerprint: String,
    /// Unix nanoseconds of the first and last entry (both inclusive).
    pub from: i64,
    pub through: i64,
    /// Object key of the chunk.
    pub key: String,
    pub entries: u64,
    /// Size of the chunk object.
    pub bytes: u64,
}

/// The content of one index object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IndexFile {
    pub entries: Vec<IndexEntry>,
}

/// A chunk read back from the store.
#[derive(Debug, Clone)]
pub struct StoredChunk {
    pub tenant: String,
    pub labels: String,
    pub from: i64,
    pub through: i64,
    /// Sorted by time.
    pub entries: Vec<Entry>,
}

/// Chunks and index in an object store. Cheap to clone.
#[derive(Clone)]
pub struct ChunkStore {
    store: Arc<dyn ObjectStore>,
    seq: Arc<AtomicU64>,
}

impl ChunkStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self {
            store,
            seq: Arc::default(),
        }
    }

    /// Opens the store the config names; the filesystem backend defaults to
    /// `<data_dir>/chunks`.
    pub fn from_config(config: &StorageConfig, data_dir: &Path) -> Result<Self, StoreError> {
        let store: Arc<dyn ObjectStore> = match config.backend {
            StorageBackend::Filesystem => {
                let dir = config
                    .filesystem
                    .directory
                    .clone()
                    .unwrap_or_else(|| data_dir.join("chunks"));
                std::fs::create_dir_all(&dir).map_err(|source| StoreError::Dir {
                    path: dir.display().to_string(),
                    source,
                })?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir)?)
            }
            StorageBackend::S3 => {
                let s3 = config.s3.as_ref().ok_or(StoreError::MissingS3)?;
                let mut builder = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s3.bucket)
                    .with_allow_http(s3.insecure || s3.allow_http);
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_virtual_hosted_style_request(!s3.force_path_style.unwrap_or(true));
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret);
                }
                Arc::new(builder.build()?)
            }
        };
        Ok(Self::new(store))
    }

    /// PUTs a chunk and returns its index entry.
    pub async fn put_chunk(&self, chunk: &ChunkData) -> Result<IndexEntry, StoreError> {
        let (bytes, crc) = chunk.encode();
        let fingerprint = format!(
            "{:016x}",
            crate::labels::Labels::parse(&chunk.labels)
                .map(|l| l.stable_hash())
                .unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_64(chunk.labels.as_bytes()))
        );
        let key = format!(
            "{}/chunks/{fingerprint}/{}-{}-{crc:08x}",
            chunk.tenant, chunk.from, chunk.through
        );
        let entry = IndexEntry {
            labels: chunk.labels.clone(),
            fingerprint,
            from: chunk.from,
            through: chunk.through,
            key: key.clone(),
            entries: chunk.blocks.iter().map(|b| u64::from(b.count)).sum(),
            bytes: bytes.len() as u64,
        };
        self.store.put(&object_path(&key), bytes.into()).await?;
        Ok(entry)
    }

    /// Writes the index objects of one flush of `tenant` by `instance`: one
    /// per day its chunks overlap.
    pub async fn put_index(
        &self,
        tenant: &str,
        instance: &str,
        entries: &[IndexEntry],
    ) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let first = entries.iter().map(|e| day(e.from)).min().unwrap_or(0);
        let last = entries.iter().map(|e| day(e.through)).max().unwrap_or(0);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let stamp = crate::time::now_nanos();
        for d in first..=last {
            let file = IndexFile {
                entries: entries
                    .iter()
                    .filter(|e| day(e.from) <= d && d <= day(e.through))
                    .cloned()
                    .collect(),
            };
            let key = format!("{tenant}/index/{d}/{instance}-{stamp}-{seq}.json");
            let json = serde_json::to_vec(&file).map_err(|e| StoreError::Index {
                key: key.clone(),
                reason: e.to_string(),
            })?;
            self.store
                .put(&object_path(&key), Bytes::from(json).into())
                .await?;
        }
        Ok(())
    }

    /// Every chunk of `tenant` overlapping [from, through] (Unix nanoseconds,
    /// inclusive), from the index. A chunk listed by several ingesters or days
    /// appears once.
    pub async fn list_index(
        &self,
        tenant: &str,
        from: i64,
        through: i64,
    ) -> Result<Vec<IndexEntry>, StoreError> {
        let mut out: Vec<IndexEntry> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        // Only the days that exist are read: a wide range costs nothing.
        let days = self
            .store
            .list_with_delimiter(Some(&object_path(&format!("{tenant}/index"))))
            .await?;
        let mut wanted: Vec<i64> = days
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename()?.parse::<i64>().ok())
            .filter(|d| (day(from)..=day(through)).contains(d))
            .collect();
        wanted.sort_unstable();
        for d in wanted {
            let prefix = object_path(&format!("{tenant}/index/{d}"));
            let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
            for meta in metas {
                let data = self.store.get(&meta.location).await?.bytes().await?;
                let file: IndexFile =
                    serde_json::from_slice(&data).map_err(|e| StoreError::Index {
                        key: meta.location.to_string(),
                        reason: e.to_string(),
                    })?;
                for entry in file.entries {
                    if entry.through >= from
                        && entry.from <= through
                        && seen.insert(entry.key.clone())
                    {
                        out.push(entry);
                    }
                }
            }
        }
        out.sort_by(|a, b| (a.from, &a.key).cmp(&(b.from, &b.key)));
        Ok(out)
    }

    /// Fetches and decodes the chunk at `key` (an [`IndexEntry::key`]).
    pub async fn fetch_chunk(&self, key: &str) -> Result<StoredChunk, StoreError> {
        self.fetch_chunk_filtered(key, None).await
    }

    /// Fetches a chunk and decodes, on the blocking thread pool so that
    /// several chunks decompress in parallel, the entries whose line passes
    /// `filter`.
    pub async fn fetch_chunk_filtered(
        &self,
        key: &str,
        filter: Option<Arc<dyn LineFilter>>,
    ) -> Result<StoredChunk, StoreError> {
        let data = self.store.get(&object_path(key)).await?.bytes().await?;
        let owned_key = key.to_string();
        let decoded = tokio::task::spawn_blocking(move || {
            let chunk = ChunkData::decode(&data)?;
            let entries = chunk.entries_filtered(filter.as_deref())?;
            Ok::<_, crate::chunk::ChunkError>((chunk, entries))
        })
        .await
        .map_err(|err| StoreError::Chunk {
            key: owned_key.clone(),
            source: crate::chunk::ChunkError::Decompress(format!("decoding task failed: {err}")),
        })?;
        let (chunk, entries) = decoded.map_err(|source| StoreError::Chunk {
            key: owned_key,
            source,
        })?;
        Ok(StoredChunk {
            tenant: chunk.tenant,
            labels: chunk.labels,
            from: chunk.from,
            through: chunk.through,
            entries,
        })
    }
}

fn day(nanos: i64) -> i64 {
    nanos.div_euclid(DAY_NS)
}

fn object_path(key: &str) -> ObjectPath {
    ObjectPath::from_iter(key.split('/').filter(|p| !p.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::Block;
    use crate::chunk::ChunkEncoding;

    #[tokio::test]
    async fn put_list_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::from_config(&StorageConfig::default(), dir.path()).unwrap();
        let entries: Vec<Entry> = (0..10)
            .map(|i| Entry {
                ts: DAY_NS - 5 + i,
                line: format!("line {i}"),
                metadata: vec![],
            })
            .collect();
        let chunk = ChunkData {
            tenant: "team-a".into(),
            labels: r#"{app="api"}"#.into(),
            from: DAY_NS - 5,
            through: DAY_NS + 4,
            blocks: vec![Block::encode(entries.clone(), ChunkEncoding::Zstd).unwrap()],
        };
        let entry = store.put_chunk(&chunk).await.unwrap();
        store
            .put_index("team-a", "ing-1", std::slice::from_ref(&entry))
            .await
            .unwrap();
        assert!(dir.path().join("chunks").join(&entry.key).exists());

        assert_eq!(
            store.list_index("team-a", 0, 2 * DAY_NS).await.unwrap(),
            vec![entry.clone()]
        );
        assert_eq!(
            store
                .list_index("team-a", DAY_NS + 1, DAY_NS + 1)
                .await
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .list_index("team-a", 0, DAY_NS - 6)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .list_index("team-b", 0, 2 * DAY_NS)
                .await
                .unwrap()
                .is_empty()
        );

        let fetched = store.fetch_chunk(&entry.key).await.unwrap();
        assert_eq!(fetched.entries, entries);
        assert_eq!(fetched.labels, chunk.labels);
    }
}
