//! Uploaded files in the NATS object store `hs_uploads`, kept until their ingest is done.
//!
//! Writing goes around `ObjectStore::put` (docs/adr/0011): an upload is staged as chunks
//! first, hashed on the way, and gets its name and meta only when it is whole and not a
//! duplicate; a refused or broken upload (413, client gone) purges its chunks, leaving
//! nothing behind, and chunk acks are pipelined instead of awaited one by one. The layout
//! is the object store's own (chunks on `$O.<store>.C.<nuid>`, meta on `$O.<store>.M.…`),
//! so any NATS client reads an upload with `nats object get`, and so does `open` here.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::object_store::{Object, ObjectInfo, ObjectOptions, ObjectStore};
use async_nats::jetstream::{self, context::PublishAckFuture, stream::Stream as JsStream};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::broker::names;
use crate::broker::{BrokerError, BrokerErrorKind};

/// The object store's default chunk size; a few of them in flight.
const CHUNK_BYTES: usize = 128 * 1024;
const CHUNKS_IN_FLIGHT: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the file is over the limit of {max} bytes")]
    TooLarge { max: u64 },
    #[error("the upload broke off: {0}")]
    Body(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Chunks written under a fresh nuid, not yet an object.
pub struct Staged {
    nuid: String,
    pub size: u64,
    pub chunks: usize,
    pub sha256: [u8; 32],
}

#[derive(Clone)]
pub struct UploadStore {
    js: jetstream::Context,
    store: ObjectStore,
    stream: JsStream,
}

impl UploadStore {
    pub async fn new(js: jetstream::Context, store: ObjectStore) -> Result<Self, BrokerError> {
        let stream = js
            .get_stream(names::object_store_stream(names::UPLOADS_STORE))
            .await
            .map_err(|e| BrokerError::new("looking up the uploads stream", e))?;
        Ok(Self { js, store, stream })
    }

    /// Writes `body` as chunks, at most `max` bytes, hashing it. On any failure the
    /// chunks written so far are purged.
    pub async fn stage<E: std::fmt::Display>(
        &self,
        body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        max: u64,
    ) -> Result<Staged, StoreError> {
        let nuid = ulid::Ulid::new().to_string();
        let subject = names::object_chunks_subject(names::UPLOADS_STORE, &nuid);
        let written = self.write_chunks(&subject, body, max).await;
        match written {
            Ok((size, chunks, sha256)) => Ok(Staged {
                nuid,
                size,
                chunks,
                sha256,
            }),
            Err(e) => {
                self.purge(&subject).await;
                Err(e)
            }
        }
    }

    async fn write_chunks<E: std::fmt::Display>(
        &self,
        subject: &str,
        mut body: impl Stream<Item = Result<Bytes, E>> + Unpin,
        max: u64,
    ) -> Result<(u64, usize, [u8; 32]), StoreError> {
        let mut hash = Sha256::new();
        let mut size = 0u64;
        let mut chunks = 0usize;
        let mut buffer = BytesMut::with_capacity(CHUNK_BYTES);
        let mut acks: VecDeque<PublishAckFuture> = VecDeque::new();
        let mut ended = false;
        while !ended {
            match body.next().await {
                Some(Ok(bytes)) => {
                    size += bytes.len() as u64;
                    if size > max {
                        return Err(StoreError::TooLarge { max });
                    }
                    buffer.extend_from_slice(&bytes);
                }
                Some(Err(e)) => return Err(StoreError::Body(e.to_string())),
                None => ended = true,
            }
            while buffer.len() >= CHUNK_BYTES || (ended && !buffer.is_empty()) {
                let n = buffer.len().min(CHUNK_BYTES);
                let chunk = buffer.split_to(n).freeze();
                hash.update(&chunk);
                chunks += 1;
                if acks.len() >= CHUNKS_IN_FLIGHT {
                    let oldest = acks.pop_front().expect("the queue is full");
                    oldest
                        .await
                        .map_err(|e| BrokerError::new("storing an upload chunk", e))?;
                }
                let ack = self
                    .js
                    .publish(subject.to_string(), chunk)
                    .await
                    .map_err(|e| BrokerError::new("storing an upload chunk", e))?;
                acks.push_back(ack);
            }
        }
        for ack in acks {
            ack.await
                .map_err(|e| BrokerError::new("storing an upload chunk", e))?;
        }
        Ok((size, chunks, hash.finalize().into()))
    }

    /// Makes the staged chunks the object `name`.
    pub async fn commit(&self, staged: &Staged, name: &str) -> Result<(), BrokerError> {
        let info = ObjectInfo {
            name: name.to_string(),
            description: None,
            metadata: Default::default(),
            headers: None,
            options: Some(ObjectOptions {
                link: None,
                max_chunk_size: Some(CHUNK_BYTES),
            }),
            bucket: names::UPLOADS_STORE.to_string(),
            nuid: staged.nuid.clone(),
            size: staged.size as usize,
            chunks: staged.chunks,
            modified: Some(time::OffsetDateTime::now_utc()),
            digest: Some(format!(
                "SHA-256={}",
                base64::engine::general_purpose::URL_SAFE.encode(staged.sha256)
            )),
            deleted: false,
        };
        let mut headers = HeaderMap::new();
        headers.insert(names::ROLLUP, names::ROLLUP_SUBJECT);
        let body: Bytes = serde_json::to_vec(&info)
            .expect("object info serialises")
            .into();
        self.js
            .publish_with_headers(
                names::object_meta_subject(names::UPLOADS_STORE, name),
                headers,
                body,
            )
            .await
            .map_err(|e| BrokerError::new("storing an upload", e))?
            .await
            .map_err(|e| BrokerError::new("storing an upload", e))?;
        Ok(())
    }

    /// Drops staged chunks that will not become an object (a duplicate upload).
    pub async fn discard(&self, staged: Staged) {
        self.purge(&names::object_chunks_subject(
            names::UPLOADS_STORE,
            &staged.nuid,
        ))
        .await;
    }

    async fn purge(&self, subject: &str) {
        if let Err(e) = self.stream.purge().filter(subject).await {
            tracing::warn!(error = %e, "upload chunks not purged");
        }
    }

    /// Reads an object from its first byte.
    pub async fn open(&self, name: &str) -> Result<Object, BrokerError> {
        self.store
            .get(name)
            .await
            .map_err(|e| BrokerError::new("opening an upload", e))
    }

    /// Removes an object entirely: its chunks and its meta (no tombstone is kept).
    pub async fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let info = match self.store.info(name).await {
            Ok(info) => info,
            Err(e) => {
                let err = BrokerError::new("looking up an upload", e);
                return if err.kind == BrokerErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(err)
                };
            }
        };
        for subject in [
            names::object_chunks_subject(names::UPLOADS_STORE, &info.nuid),
            names::object_meta_subject(names::UPLOADS_STORE, name),
        ] {
            self.stream
                .purge()
                .filter(&subject)
                .await
                .map_err(|e| BrokerError::new("deleting an upload", e))?;
        }
        Ok(())
    }

    /// The objects in the store: the uploads whose ingest is not done, and orphans.
    pub async fn list(&self) -> Result<Vec<(String, Duration)>, BrokerError> {
        let list = self
            .store
            .list()
            .await
            .map_err(|e| BrokerError::new("listing uploads", e))?;
        let infos: Vec<ObjectInfo> = list
            .try_collect()
            .await
            .map_err(|e| BrokerError::new("listing uploads", e))?;
        let now = time::OffsetDateTime::now_utc();
        Ok(infos
            .into_iter()
            .map(|i| {
                let age = i
                    .modified
                    .map(|m| (now - m).try_into().unwrap_or_default())
                    .unwrap_or_default();
                (i.name, age)
            })
            .collect())
    }
}
