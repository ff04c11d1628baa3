//! Several concentrators behaving as one: the vMotions they share.
//!
//! A vMotion's destination host may reach another instance than its source's (a virtual IP,
//! round-robin DNS): the proxyURI is the same, and option 232 has no redirect. So the
//! instance that answers a BEGIN with GOAHEAD publishes where it can be reached under a
//! digest of the vMotion's key (`sequence ++ secret`), and an instance that receives a PEER
//! for a key it does not hold claims that record (atomically, once) and carries the
//! destination connection to the owner: it replays what the destination sent to the owner's
//! VM listener, skips the owner's answers to the handshake the destination already got, and
//! from the owner's answer to the PEER on relays bytes both ways. The owner checks the
//! secret as for any PEER and completes the vMotion itself, so its clients stay where they
//! are and its console log stays its own.
//!
//! The store is a [`SharedState`]: [`RedisState`] (Redis or Valkey, shared by the
//! instances) or [`MemoryState`] (instances in one process, e.g. an embedder's tests).
//! Without one (the default), every PEER is answered where it arrives.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A boxed future, for the object-safe [`SharedState`].
pub type StateFuture<'a, T> =
    Pin<Box<dyn Future<Output = Result<T, SharedStateError>> + Send + 'a>>;

/// Why the shared state could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedStateError {
    /// The store could not be reached or failed the command.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
    /// A record held something that is not an address.
    #[error("shared state record is not an address: {0:?}")]
    BadRecord(String),
}

/// Where concentrators that behave as one keep their vMotion handover records.
pub trait SharedState: Send + Sync + 'static {
    /// Records that the vMotion whose key hashes to `digest` is held by the instance
    /// reachable at `owner`, for `ttl`.
    fn offer(&self, digest: &str, owner: SocketAddr, ttl: Duration) -> StateFuture<'_, ()>;
    /// Takes the record for `digest`: `Some(owner)` once, `None` for every later claim or
    /// an unknown or expired digest.
    fn claim(&self, digest: &str) -> StateFuture<'_, Option<SocketAddr>>;
}

/// Handover records in this process's memory: concentrators embedded in one process.
#[derive(Debug, Default)]
pub struct MemoryState {
    records: Mutex<HashMap<String, (SocketAddr, Instant)>>,
}

impl SharedState for MemoryState {
    fn offer(&self, digest: &str, owner: SocketAddr, ttl: Duration) -> StateFuture<'_, ()> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        records.retain(|_, (_, until)| *until > now);
        records.insert(digest.to_owned(), (owner, now + ttl));
        Box::pin(async { Ok(()) })
    }

    fn claim(&self, digest: &str) -> StateFuture<'_, Option<SocketAddr>> {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let owner = records
            .remove(digest)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(owner, _)| owner);
        Box::pin(async move { Ok(owner) })
    }
}

/// Handover records in Redis or Valkey: `SET {prefix}:handover:{digest} owner PX ttl`, claimed
/// with `GETDEL` (atomic: one claimant wins, the key is gone after it). A store that cannot
/// be reached within a second makes the claim fail: the destination is refused, and local
/// VMs never wait for it.
pub struct RedisState {
    client: redis::Client,
    prefix: String,
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// How long a command may take before the store counts as unreachable.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

impl RedisState {
    /// A store at `url` (`redis://host:port/db`); keys start with `prefix`. Connects on first
    /// use, and again after a failure.
    pub fn new(url: &str, prefix: &str) -> Result<RedisState, SharedStateError> {
        let client =
            redis::Client::open(url).map_err(|e| SharedStateError::Unavailable(e.to_string()))?;
        Ok(RedisState {
            client,
            prefix: prefix.to_owned(),
            connection: tokio::sync::Mutex::new(None),
        })
    }

    async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: redis::Cmd,
    ) -> Result<T, SharedStateError> {
        let unavailable = |e: &dyn std::fmt::Display| SharedStateError::Unavailable(e.to_string());
        let mut slot = self.connection.lock().await;
        let mut connection = match slot.as_ref() {
            Some(connection) => connection.clone(),
            None => {
                let connected = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    self.client.get_multiplexed_async_connection(),
                )
                .await
                .map_err(|e| unavailable(&e))?
                .map_err(|e| unavailable(&e))?;
                *slot = Some(connected.clone());
                connected
            }
        };
        drop(slot);
        let result = tokio::time::timeout(REDIS_TIMEOUT, cmd.query_async(&mut connection)).await;
        match result {
            Ok(Ok(value)) => Ok(value),
            failed => {
                // Reconnect next time.
                *self.connection.lock().await = None;
                Err(match failed {
                    Ok(Err(e)) => unavailable(&e),
                    _ => unavailable(&"timed out"),
                })
            }
        }
    }

    fn key(&self, digest: &str) -> String {
        format!("{}:handover:{digest}", self.prefix)
    }
}

impl SharedState for RedisState {
    fn offer(&self, digest: &str, owner: SocketAddr, ttl: Duration) -> StateFuture<'_, ()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(digest))
            .arg(owner.to_string())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        Box::pin(async move { self.query::<()>(cmd).await })
    }

    fn claim(&self, digest: &str) -> StateFuture<'_, Option<SocketAddr>> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key(digest));
        Box::pin(async move {
            let value: Option<String> = self.query(cmd).await?;
            value
                .map(|v| v.parse().map_err(|_| SharedStateError::BadRecord(v)))
                .transpose()
        })
    }
}

/// What an instance shares, and how it is reached.
#[derive(Clone)]
pub(crate) struct Cluster {
    pub(crate) state: Arc<dyn SharedState>,
    /// This instance's VM listener, as the others reach it.
    pub(crate) advertise: SocketAddr,
}

/// A record outlives its vMotion's deadline by this much (clocks and queues differ a little).
const RECORD_MARGIN: Duration = Duration::from_secs(5);

/// The record name of a vMotion key: a digest, so the store never holds a secret.
pub(crate) fn digest(key: &[u8]) -> String {
    let hash = Sha256::digest(key);
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

impl Cluster {
    /// The record's lifetime for a vMotion that expires at `deadline`.
    pub(crate) fn ttl(deadline: Instant, now: Instant) -> Duration {
        deadline.saturating_duration_since(now) + RECORD_MARGIN
    }
}

/// The most a destination may send before its PEER is routed (a destination's handshake is
/// a few hundred bytes): past it, it cannot be carried to another instance.
pub(crate) const MAX_REPLAY: usize = 16 * 1024;

/// How long the owner may take to answer the replayed handshake's PEER.
const OWNER_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries a destination connection to the instance that holds its vMotion (see the module
/// docs): `replay` is everything the destination sent so far.
pub(crate) async fn carry<S>(mut vm: S, replay: Bytes, owner: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = tokio::time::timeout(OWNER_TIMEOUT, tokio::net::TcpStream::connect(owner)).await;
    let mut upstream = match upstream {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(%error, %owner, "cannot reach the vMotion's owner");
            return;
        }
        Err(_) => {
            tracing::warn!("the vMotion's owner did not accept in time");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&replay).await.is_err() {
        return;
    }
    // The owner answers the whole handshake again; the destination had those answers from
    // us. What is new starts with its answer to the PEER.
    let mut answers = BytesMut::new();
    let start = loop {
        if let Some(at) = peer_answer_at(&answers) {
            break at;
        }
        if answers.len() > MAX_REPLAY {
            tracing::warn!("the owner's answer to the PEER never came");
            return;
        }
        match tokio::time::timeout(OWNER_TIMEOUT, upstream.read_buf(&mut answers)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                tracing::warn!("the owner closed or stalled before answering the PEER");
                return;
            }
        }
    };
    if vm.write_all(&answers[start..]).await.is_err() {
        return;
    }
    tracing::info!(%owner, "destination carried to the vMotion's owner");
    let _ = tokio::io::copy_bidirectional(&mut vm, &mut upstream).await;
}

/// Where the owner's answer to a PEER starts in its output: `IAC SB 232 VMOTION-PEER-OK` or
/// `IAC SB 232 UNKNOWN-SUBOPTION-RCVD-2 44 IAC SE`. What precedes it are telnet commands
/// only (a destination carries no data before its PEER is accepted), so a byte search
/// cannot match inside data.
fn peer_answer_at(output: &[u8]) -> Option<usize> {
    const PEER_OK: &[u8] = &[0xff, 0xfa, 0xe8, 45];
    const REFUSED: &[u8] = &[0xff, 0xfa, 0xe8, 3, 44, 0xff, 0xf0];
    [PEER_OK, REFUSED]
        .iter()
        .filter_map(|needle| output.windows(needle.len()).position(|w| w == *needle))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_answer_is_found_after_the_handshake_answers() {
        let mut output = vec![0xff, 0xfb, 0x00, 0xff, 0xfd, 0xe8];
        output.extend_from_slice(&[0xff, 0xfa, 0xe8, 1, 0, 1, 2, 45, 0xff, 0xf0]);
        let at = output.len();
        output.extend_from_slice(&[0xff, 0xfa, 0xe8, 45, 0x44, 0xda, 0xff, 0xf0]);
        assert_eq!(peer_answer_at(&output), Some(at));
        assert_eq!(peer_answer_at(&output[..at + 3]), None);
        let refused = [0xff, 0xfd, 0x00, 0xff, 0xfa, 0xe8, 3, 44, 0xff, 0xf0];
        assert_eq!(peer_answer_at(&refused), Some(3));
    }

    #[tokio::test]
    async fn a_memory_record_is_claimed_once() {
        let state = MemoryState::default();
        let owner: SocketAddr = "127.0.0.1:1".parse().unwrap();
        state
            .offer("d", owner, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(state.claim("d").await.unwrap(), Some(owner));
        assert_eq!(state.claim("d").await.unwrap(), None);
        state.offer("e", owner, Duration::ZERO).await.unwrap();
        assert_eq!(state.claim("e").await.unwrap(), None);
    }

    #[test]
    fn digests_hide_the_key() {
        let d = digest(b"\x44\xda\x87\xf1\x3c\xe6\x4d\xab");
        assert_eq!(d.len(), 64);
        assert!(!d.contains("3ce64dab"));
    }
}
