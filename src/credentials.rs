//! The two kinds of credential. The owner token (the data dir's `token` file) is the
//! human's and never enters an agent's environment. Each execution gets an agent token
//! of its own: made with the execution (only its SHA-256 is stored, with the execution's
//! row, so it is durable before any process can carry it), good from its process's spawn
//! until the execution is final. [`AgentTokens`] is written by the ExecutionMonitor
//! alone (grant at spawn, revoke at the end) and read by the HTTP guard
//! (`http/auth.rs`), which also rate-limits each agent token so a looping agent cannot
//! starve the owner.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use crate::domain::ExecutionId;
use crate::domain::SessionId;

/// Requests per second an agent token may make on average, and in a burst.
pub const AGENT_RATE_PER_S: f64 = 20.0;
pub const AGENT_BURST: f64 = 60.0;
/// Long polls one agent token may hold open at once.
pub const AGENT_WAITS: usize = 8;

/// The hex SHA-256 of a token: how agent tokens are found and stored.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// What an agent token lets its holder do: act for one execution (and the session it is
/// a turn of).
#[derive(Debug, Clone)]
pub struct AgentGrant {
    pub execution_id: ExecutionId,
    pub session_id: Option<SessionId>,
    limiter: Arc<Mutex<Bucket>>,
    waits: Arc<AtomicUsize>,
}

/// One of an agent token's long polls; its place is given back when dropped.
pub struct WaitSlot(Arc<AtomicUsize>);

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl AgentGrant {
    /// A place for one more long poll, unless the token holds `AGENT_WAITS` already.
    pub fn hold_wait(&self) -> Option<WaitSlot> {
        let taken = self.waits.fetch_add(1, Ordering::Relaxed);
        let slot = WaitSlot(self.waits.clone());
        (taken < AGENT_WAITS).then_some(slot)
    }

    /// Takes one request from the token's bucket, or says how long until one is free.
    pub fn take_request(&self) -> Result<(), Duration> {
        let mut bucket = self.limiter.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        bucket.take(Instant::now())
    }
}

/// A token bucket: `AGENT_BURST` deep, refilled at `AGENT_RATE_PER_S`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refilled = now.saturating_duration_since(self.at).as_secs_f64() * AGENT_RATE_PER_S;
        self.tokens = (self.tokens + refilled).min(AGENT_BURST);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / AGENT_RATE_PER_S))
        }
    }
}

/// An agent token: the token goes into the process's environment, the hash into the
/// database.
#[derive(Clone)]
pub struct IssuedToken {
    pub token: String,
    pub hash: String,
}

impl IssuedToken {
    /// A new token (256 random bits), not in force until granted.
    pub fn new() -> IssuedToken {
        let token = format!("wa_{}", hex::encode(rand::random::<[u8; 32]>()));
        let hash = token_hash(&token);
        IssuedToken { token, hash }
    }
}

impl Default for IssuedToken {
    fn default() -> Self {
        IssuedToken::new()
    }
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken").field("hash", &self.hash).finish_non_exhaustive()
    }
}

/// The agent tokens in force, by hash. Cheap to clone.
#[derive(Clone, Default)]
pub struct AgentTokens {
    by_hash: Arc<DashMap<String, AgentGrant>>,
    by_execution: Arc<DashMap<ExecutionId, String>>,
}

impl AgentTokens {
    /// Puts an execution's token in force, as its process is about to spawn (replacing
    /// any earlier one of the same execution).
    pub fn grant(&self, execution_id: ExecutionId, session_id: Option<SessionId>, token: &IssuedToken) {
        self.revoke(execution_id);
        let bucket = Bucket { tokens: AGENT_BURST, at: Instant::now() };
        let grant = AgentGrant {
            execution_id,
            session_id,
            limiter: Arc::new(Mutex::new(bucket)),
            waits: Arc::new(AtomicUsize::new(0)),
        };
        self.by_hash.insert(token.hash.clone(), grant);
        self.by_execution.insert(execution_id, token.hash.clone());
    }

    /// The execution is final: its token is good for nothing any more.
    pub fn revoke(&self, execution_id: ExecutionId) {
        if let Some((_, hash)) = self.by_execution.remove(&execution_id) {
            self.by_hash.remove(&hash);
        }
    }

    /// What a presented token may do, if it is an agent token in force.
    pub fn find(&self, presented: &str) -> Option<AgentGrant> {
        if !presented.starts_with("wa_") {
            return None;
        }
        self.by_hash.get(&token_hash(presented)).map(|grant| grant.clone())
    }

    /// How many agent tokens are in force.
    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_until_revoked_and_only_its_hash_is_kept() {
        let tokens = AgentTokens::default();
        let issued = IssuedToken::new();
        assert!(tokens.find(&issued.token).is_none(), "not in force before it is granted");
        tokens.grant(ExecutionId(7), Some(SessionId(3)), &issued);
        assert_eq!(issued.hash, token_hash(&issued.token));
        assert!(!issued.hash.contains(&issued.token));
        let grant = tokens.find(&issued.token).expect("the token is in force");
        assert_eq!((grant.execution_id, grant.session_id), (ExecutionId(7), Some(SessionId(3))));
        assert!(tokens.find("wa_not-a-token").is_none());
        tokens.revoke(ExecutionId(7));
        assert!(tokens.find(&issued.token).is_none());
        assert!(tokens.is_empty());
    }

    #[test]
    fn a_new_token_replaces_the_old_one() {
        let tokens = AgentTokens::default();
        let (first, second) = (IssuedToken::new(), IssuedToken::new());
        tokens.grant(ExecutionId(1), None, &first);
        tokens.grant(ExecutionId(1), None, &second);
        assert!(tokens.find(&first.token).is_none());
        assert!(tokens.find(&second.token).is_some());
        assert_eq!(tokens.len(), 1);
    }

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket { tokens: AGENT_BURST, at: start };
        for _ in 0..AGENT_BURST as usize {
            assert!(bucket.take(start).is_ok());
        }
        let wait = bucket.take(start).expect_err("the burst is spent");
        assert!(wait <= Duration::from_secs_f64(1.0 / AGENT_RATE_PER_S) + Duration::from_millis(1));
        assert!(bucket.take(start + Duration::from_secs(1)).is_ok(), "a second later the rate has refilled it");
    }
}
