//! Incremental fetch sessions (KIP-227): the partitions a fetcher reads
//! and how far it has read each, kept by the broker between Fetch
//! requests, so each request names only the partitions whose fetch
//! changed and each response carries only the partitions with something
//! new. A follower fetching a thousand idle partitions then sends and
//! receives almost nothing per round.
//!
//! A request's (session id, session epoch) says what it is:
//! - (0, -1): a full fetch without a session (every partition named,
//!   every partition answered);
//! - (any, 0): a full fetch that closes the named session, if any, and
//!   asks for a new one; the response carries its id, or 0 when the cache
//!   has no room;
//! - (id, -1): a full fetch that closes session `id`;
//! - (id, n > 0): an incremental fetch, valid only if `n` is the epoch the
//!   session expects next (else INVALID_FETCH_SESSION_EPOCH, or
//!   FETCH_SESSION_ID_NOT_FOUND for an unknown id). Its partitions are
//!   added or updated, its forgotten partitions dropped, and the fetch
//!   reads every partition of the session.
//!
//! An incremental response carries a partition only when it has records,
//! an error or a diverging epoch, or when its high watermark or log start
//! offset differ from what the session last told the fetcher. Partitions
//! that returned records move to the end of the session, so a response
//! filled to its byte limit by the first partitions does not starve the
//! others. As in Kafka, the cache holds at most
//! `max.incremental.fetch.session.cache.slots` sessions (1000); when it
//! is full a session idle for two minutes is evicted for a new one, and a
//! follower's new session may evict a consumer's.
//!
//! A session belongs to the fetcher that created it: a follower's to that
//! broker at that incarnation, a consumer's to consumers. An incremental
//! fetch from anyone else is answered FETCH_SESSION_ID_NOT_FOUND, so that
//! no broker's fetch is ever taken for another's (a follower's fetch
//! offsets move the high watermark).
//!
//! Everything here is a plain function of the requests, the responses and
//! the time passed in.

use std::collections::HashMap;

use indexmap::IndexMap;
use kafka_protocol::error::ResponseError;
use uuid::Uuid;

/// Kafka's max.incremental.fetch.session.cache.slots.
pub const MAX_SESSIONS: usize = 1000;
/// Kafka's min.incremental.fetch.session.eviction.ms.
pub const EVICTION_IDLE_MS: i64 = 120_000;

/// The epoch of a full fetch that asks for a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full fetch that wants none.
pub const FINAL_EPOCH: i32 = -1;

/// A partition as a session names it: by topic id from Fetch v13, by
/// topic name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Id(Uuid),
    Name(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// What a fetcher asks of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchParams {
    pub fetch_offset: i64,
    pub last_fetched_epoch: i32,
    pub current_leader_epoch: i32,
    pub log_start_offset: i64,
    pub partition_max_bytes: i32,
}

/// What a response says of one partition, as far as deciding whether an
/// incremental response must carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answered {
    pub has_records: bool,
    pub has_error: bool,
    pub diverged: bool,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy)]
struct CachedPartition {
    params: FetchParams,
    /// What the fetcher was last told; -1 before anything was.
    high_watermark: i64,
    log_start_offset: i64,
}

impl CachedPartition {
    fn new(params: FetchParams) -> Self {
        Self {
            params,
            high_watermark: -1,
            log_start_offset: -1,
        }
    }

    /// Whether an incremental response must carry the partition, noting
    /// what it tells the fetcher.
    fn must_answer(&mut self, answered: &Answered) -> bool {
        let news = answered.high_watermark != self.high_watermark
            || answered.log_start_offset != self.log_start_offset;
        self.high_watermark = answered.high_watermark;
        self.log_start_offset = answered.log_start_offset;
        if answered.has_error {
            // Told again once the error clears.
            self.high_watermark = -1;
        }
        news || answered.has_records || answered.has_error || answered.diverged
    }
}

/// Who fetches in a session: a follower's (replica id, replica epoch), or
/// `None` for a consumer.
pub type Owner = Option<(i32, i64)>;

#[derive(Debug)]
struct Session {
    /// The epoch the next incremental request must carry.
    epoch: i32,
    owner: Owner,
    uses_topic_ids: bool,
    partitions: IndexMap<PartitionKey, CachedPartition>,
    last_used_ms: i64,
}

/// What a fetch request says of its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRequest {
    pub id: i32,
    pub epoch: i32,
    pub owner: Owner,
    /// Whether the request names topics by id (Fetch v13+).
    pub uses_topic_ids: bool,
}

impl SessionRequest {
    /// A full fetch without a session that names none to close: the
    /// cache has nothing to do with it (most consumers' fetches).
    pub fn is_sessionless(&self) -> bool {
        self.id == 0 && self.epoch == FINAL_EPOCH
    }
}

/// How a fetch request is served.
#[derive(Debug, PartialEq, Eq)]
pub enum FetchContext {
    /// Every named partition, answered whole; no session is kept.
    Sessionless,
    /// Every named partition, answered whole; a session is created with
    /// them once answered ([`SessionCache::create`]).
    NewSession,
    /// Every partition of session `id`, answered incrementally
    /// ([`SessionCache::answer_incremental`]) at `epoch`.
    Incremental {
        id: i32,
        epoch: i32,
        partitions: Vec<(PartitionKey, FetchParams)>,
    },
}

/// The sessions of one broker.
#[derive(Debug)]
pub struct SessionCache {
    sessions: HashMap<i32, Session>,
    capacity: usize,
    next_id: i32,
    stats: SessionStats,
}

/// What the cache holds and has done, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStats {
    pub sessions: usize,
    pub partitions: usize,
    pub evictions: u64,
    /// Incremental fetches accepted.
    pub incremental_fetches: u64,
}

impl SessionCache {
    /// A cache of `capacity` sessions whose ids start after `seed` (a
    /// random seed keeps a restarted broker from handing out the ids its
    /// previous run gave its fetchers).
    pub fn new(capacity: usize, seed: u32) -> Self {
        Self {
            sessions: HashMap::new(),
            capacity,
            next_id: (seed & 0x7fff_ffff) as i32,
            stats: SessionStats::default(),
        }
    }

    /// Decides how to serve a request in `request`'s session naming
    /// `requested` and forgetting `forgotten`.
    pub fn context(
        &mut self,
        request: SessionRequest,
        requested: &[(PartitionKey, FetchParams)],
        forgotten: &[PartitionKey],
        now_ms: i64,
    ) -> Result<FetchContext, ResponseError> {
        let SessionRequest {
            id: session_id,
            epoch: session_epoch,
            owner,
            uses_topic_ids,
        } = request;
        if session_epoch == INITIAL_EPOCH || session_epoch == FINAL_EPOCH {
            if session_id != 0 {
                self.sessions.remove(&session_id);
            }
            return Ok(if session_epoch == INITIAL_EPOCH {
                FetchContext::NewSession
            } else {
                FetchContext::Sessionless
            });
        }
        let session = self
            .sessions
            .get_mut(&session_id)
            .filter(|s| s.owner == owner)
            .ok_or(ResponseError::FetchSessionIdNotFound)?;
        if session.epoch != session_epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        if session.uses_topic_ids != uses_topic_ids {
            return Err(ResponseError::FetchSessionTopicIdError);
        }
        for (key, params) in requested {
            match session.partitions.get_mut(key) {
                Some(cached) => cached.params = *params,
                None => {
                    session
                        .partitions
                        .insert(key.clone(), CachedPartition::new(*params));
                }
            }
        }
        for key in forgotten {
            session.partitions.shift_remove(key);
        }
        session.epoch = next_epoch(session.epoch);
        session.last_used_ms = now_ms;
        self.stats.incremental_fetches += 1;
        let partitions = session
            .partitions
            .iter()
            .map(|(key, cached)| (key.clone(), cached.params))
            .collect();
        Ok(FetchContext::Incremental {
            id: session_id,
            epoch: session.epoch,
            partitions,
        })
    }

    /// Keeps a session for a full fetch by `owner` that asked for one, once
    /// answered: `answered` are its partitions with what the response told
    /// of each.
    /// Returns the new session's id, or 0 when there is no room.
    pub fn create(
        &mut self,
        owner: Owner,
        uses_topic_ids: bool,
        answered: Vec<(PartitionKey, FetchParams, Answered)>,
        now_ms: i64,
    ) -> i32 {
        if answered.is_empty() || !self.make_room(owner.is_some(), now_ms) {
            return 0;
        }
        let partitions = answered
            .into_iter()
            .map(|(key, params, answered)| {
                let mut cached = CachedPartition::new(params);
                cached.must_answer(&answered);
                (key, cached)
            })
            .collect();
        let id = self.new_id();
        self.sessions.insert(
            id,
            Session {
                epoch: next_epoch(INITIAL_EPOCH),
                owner,
                uses_topic_ids,
                partitions,
                last_used_ms: now_ms,
            },
        );
        id
    }

    /// Which partitions of an incremental response to carry: true for each
    /// of `answered` (in the order the context listed them) that must be.
    /// Fails with INVALID_FETCH_SESSION_EPOCH when another request of the
    /// session came in meanwhile (or the session was evicted): what this
    /// one read is then not what the session remembers.
    pub fn answer_incremental(
        &mut self,
        id: i32,
        epoch: i32,
        answered: &[(&PartitionKey, Answered)],
    ) -> Result<Vec<bool>, ResponseError> {
        let session = self
            .sessions
            .get_mut(&id)
            .filter(|s| s.epoch == epoch)
            .ok_or(ResponseError::InvalidFetchSessionEpoch)?;
        let mut carried = Vec::with_capacity(answered.len());
        for &(key, ref answer) in answered {
            let must = session
                .partitions
                .get_mut(key)
                .is_some_and(|cached| cached.must_answer(answer));
            if answer.has_records {
                if let Some(cached) = session.partitions.shift_remove(key) {
                    session.partitions.insert(key.clone(), cached);
                }
            }
            carried.push(must);
        }
        Ok(carried)
    }

    pub fn stats(&self) -> SessionStats {
        SessionStats {
            sessions: self.sessions.len(),
            partitions: self.sessions.values().map(|s| s.partitions.len()).sum(),
            ..self.stats
        }
    }

    /// Makes room for one more session if the cache is full: evicts the
    /// session idle longest if it has been idle long enough, or else, for
    /// a follower, a consumer's session.
    fn make_room(&mut self, follower: bool, now_ms: i64) -> bool {
        if self.sessions.len() < self.capacity {
            return true;
        }
        let idle = self
            .sessions
            .iter()
            .filter(|(_, s)| now_ms - s.last_used_ms >= EVICTION_IDLE_MS)
            .min_by_key(|(_, s)| s.last_used_ms)
            .map(|(&id, _)| id);
        let victim = idle.or_else(|| {
            follower
                .then(|| {
                    self.sessions
                        .iter()
                        .filter(|(_, s)| s.owner.is_none())
                        .min_by_key(|(_, s)| s.last_used_ms)
                        .map(|(&id, _)| id)
                })
                .flatten()
        });
        match victim {
            Some(id) => {
                self.sessions.remove(&id);
                self.stats.evictions += 1;
                true
            }
            None => false,
        }
    }

    fn new_id(&mut self) -> i32 {
        loop {
            self.next_id = self.next_id.checked_add(1).unwrap_or(1);
            if !self.sessions.contains_key(&self.next_id) {
                return self.next_id;
            }
        }
    }
}

/// The epoch after `epoch`: 1 after i32::MAX, as Kafka wraps it.
pub fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

#[cfg(test)]
mod tests;
