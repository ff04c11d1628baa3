//! The shared state in Redis or Valkey.
//!
//! Keys, under the site's prefix `P` (a standalone server or a primary; Redis Cluster is not
//! supported, since the scripts touch keys they compute):
//! - `P:handover:{digest}`: a vMotion's owner address (`SET … PX`), claimed with `GETDEL`;
//! - `P:instance:{id}`: `{incarnation} {link address}` of an instance's current run, under
//!   its lease (renewed with one `SET … PX … GET`, which also tells whether it had lapsed);
//! - `P:port:{digest}`: `{incarnation} {id}` of the run holding a VM port, held while that
//!   run's lease lives (a restarted instance is a new run: its last run's ports are free);
//! - `P:ports`: a hash of port digest → the port (JSON), and the indexes `P:name:{name}` and
//!   `P:uuid:{compact uuid}` (sets of digests) that `locate` reads; the entries of an
//!   instance whose lease lapsed are removed by the reads that meet them;
//! - `P:site:token`: the site's shared secret (`SET NX`).
//!
//! Each claim, release and read of ports is one Lua script, so a port's check and claim are
//! atomic.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::{
    fresh_token, Holding, Instance, SharedState, SharedStateError, SitePort, SiteSelector, SiteVm,
    StateFuture, Who,
};

/// Handover records and the directory in Redis or Valkey (see the module docs for the keys).
/// A store that cannot be reached within a second fails the call: a destination is then
/// refused, and local VMs never wait for it.
pub struct RedisState {
    client: redis::Client,
    prefix: String,
    connection: tokio::sync::Mutex<Option<MultiplexedConnection>>,
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

/// How long a lease command may take (a third of the lease, between one and five seconds):
/// a lease call is no one's wait, and a connect storm on a busy machine can hold the store
/// for longer than a second without it being away.
fn lease_timeout(lease: Duration) -> Duration {
    (lease / 3).clamp(REDIS_TIMEOUT, Duration::from_secs(5))
}

/// Ports claimed or renewed per script call: a renewal of many ports must not hold the
/// store's single thread for long.
const HOLD_BATCH: usize = 500;

/// The Lua function the scripts share: the id and link of a port's holder if its run's
/// lease lives, else nil.
macro_rules! live_holder {
    () => {
        r"
local function live(p, holder)
  if not holder then return nil end
  local incarnation, id = string.match(holder, '^(%d+) (.*)$')
  if not id then return nil end
  local announced = redis.call('GET', p .. ':instance:' .. id)
  if not announced then return nil end
  local current, link = string.match(announced, '^(%d+) (.*)$')
  if current ~= incarnation then return nil end
  return id, link
end
"
    };
}

/// Claims ports. ARGV: prefix, instance id, lease (ms), link address, incarnation, then per
/// port: digest, record, name, compact UUID. Returns per port `""` (held) or the live holder.
const HOLD: &str = concat!(
    live_holder!(),
    r"
local p, me, lease, incarnation = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
redis.call('SET', p .. ':instance:' .. me, incarnation .. ' ' .. ARGV[4], 'PX', lease)
local mine = incarnation .. ' ' .. me
local out = {}
for i = 6, #ARGV, 4 do
  local digest = ARGV[i]
  local key = p .. ':port:' .. digest
  local holder = redis.call('GET', key)
  local other = holder ~= mine and live(p, holder)
  if other then
    out[#out + 1] = other
  else
    if holder ~= mine then
      redis.call('SET', key, mine)
      redis.call('HSET', p .. ':ports', digest, ARGV[i + 1])
      redis.call('SADD', p .. ':name:' .. ARGV[i + 2], digest)
      redis.call('SADD', p .. ':uuid:' .. ARGV[i + 3], digest)
    end
    out[#out + 1] = ''
  end
end
return out
"
);

/// Releases ports held by this run. ARGV: prefix, instance id, incarnation, then per port:
/// digest, name, compact UUID.
const RELEASE: &str = r"
local p = ARGV[1]
local mine = ARGV[3] .. ' ' .. ARGV[2]
for i = 4, #ARGV, 3 do
  local digest = ARGV[i]
  local key = p .. ':port:' .. digest
  if redis.call('GET', key) == mine then
    redis.call('DEL', key)
    redis.call('HDEL', p .. ':ports', digest)
    redis.call('SREM', p .. ':name:' .. ARGV[i + 1], digest)
    redis.call('SREM', p .. ':uuid:' .. ARGV[i + 2], digest)
  end
end
return 0
";

/// The held ports of one index (`name:{name}` or `uuid:{compact}`), as record, holder
/// (`{incarnation} {id}`), link triples; drops the index's entries that no live run holds. ARGV: prefix, index.
const LOCATE: &str = concat!(
    live_holder!(),
    r"
local p = ARGV[1]
local index = p .. ':' .. ARGV[2]
local out = {}
for _, digest in ipairs(redis.call('SMEMBERS', index)) do
  local key = p .. ':port:' .. digest
  local holder = redis.call('GET', key)
  local id, link = live(p, holder)
  local record = redis.call('HGET', p .. ':ports', digest)
  if id and record then
    out[#out + 1] = record
    out[#out + 1] = holder
    out[#out + 1] = link
  else
    redis.call('SREM', index, digest)
    if holder then
      redis.call('DEL', key)
      redis.call('HDEL', p .. ':ports', digest)
    end
  end
end
return out
"
);

/// Every held port, as record, holder (`{incarnation} {id}`), link triples; drops the ports that no live run holds
/// (their indexes are cleaned by `LOCATE`). ARGV: prefix.
const SITE: &str = concat!(
    live_holder!(),
    r"
local p = ARGV[1]
local all = redis.call('HGETALL', p .. ':ports')
local out = {}
for i = 1, #all, 2 do
  local key = p .. ':port:' .. all[i]
  local holder = redis.call('GET', key)
  local id, link = live(p, holder)
  if id then
    out[#out + 1] = all[i + 1]
    out[#out + 1] = holder
    out[#out + 1] = link
  else
    redis.call('DEL', key)
    redis.call('HDEL', p .. ':ports', all[i])
  end
end
return out
"
);

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

    /// Runs `operation` on the shared connection within `timeout`, reconnecting first
    /// if the last one failed.
    async fn run<T, F, Fut>(&self, timeout: Duration, operation: F) -> Result<T, SharedStateError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let unavailable = |e: &dyn std::fmt::Display| SharedStateError::Unavailable(e.to_string());
        let mut slot = self.connection.lock().await;
        let connection = match slot.as_ref() {
            Some(connection) => connection.clone(),
            None => {
                // The client's own limits (half a second per response by default) would cut
                // a lease call short on a loaded machine: every call carries its own.
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(None)
                    .set_response_timeout(None);
                let connecting = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config);
                let connected = tokio::time::timeout(timeout, connecting)
                    .await
                    .map_err(|e| unavailable(&e))?
                    .map_err(|e| unavailable(&e))?;
                *slot = Some(connected.clone());
                connected
            }
        };
        drop(slot);
        match tokio::time::timeout(timeout, operation(connection)).await {
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

    async fn query<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        cmd: redis::Cmd,
    ) -> Result<T, SharedStateError> {
        self.run(
            timeout,
            |mut c| async move { cmd.query_async(&mut c).await },
        )
        .await
    }

    async fn script<T: redis::FromRedisValue>(
        &self,
        timeout: Duration,
        source: &'static str,
        args: Vec<String>,
    ) -> Result<T, SharedStateError> {
        self.run(timeout, |mut c| async move {
            let script = redis::Script::new(source);
            let mut invocation = script.prepare_invoke();
            for arg in &args {
                invocation.arg(arg);
            }
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    async fn held(
        &self,
        source: &'static str,
        args: Vec<String>,
    ) -> Result<Vec<SiteVm>, SharedStateError> {
        let triples: Vec<String> = self.script(REDIS_TIMEOUT, source, args).await?;
        triples
            .chunks_exact(3)
            .map(|triple| {
                let bad = |field: &String| SharedStateError::BadRecord(field.clone());
                let port: SitePort =
                    serde_json::from_str(&triple[0]).map_err(|_| bad(&triple[0]))?;
                let (incarnation, id) = triple[1].split_once(' ').ok_or_else(|| bad(&triple[1]))?;
                Ok(SiteVm {
                    port,
                    instance: Instance {
                        id: id.to_owned(),
                        link: triple[2].parse().map_err(|_| bad(&triple[2]))?,
                        incarnation: incarnation.parse().map_err(|_| bad(&triple[1]))?,
                    },
                })
            })
            .collect()
    }
}

impl SharedState for RedisState {
    fn offer(&self, digest: &str, owner: SocketAddr, ttl: Duration) -> StateFuture<'_, ()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key("handover", digest))
            .arg(owner.to_string())
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        Box::pin(async move { self.query::<()>(REDIS_TIMEOUT, cmd).await })
    }

    fn claim(&self, digest: &str) -> StateFuture<'_, Option<SocketAddr>> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(self.key("handover", digest));
        Box::pin(async move {
            let value: Option<String> = self.query(REDIS_TIMEOUT, cmd).await?;
            value
                .map(|v| v.parse().map_err(|_| SharedStateError::BadRecord(v)))
                .transpose()
        })
    }

    fn renew(&self, me: &Instance, lease: Duration) -> StateFuture<'_, bool> {
        let mut cmd = redis::cmd("SET");
        let announcement = format!("{} {}", me.incarnation, me.link);
        cmd.arg(self.key("instance", &me.id))
            .arg(&announcement)
            .arg("PX")
            .arg(lease.as_millis().max(1) as u64)
            .arg("GET");
        Box::pin(async move {
            let before: Option<String> = self.query(lease_timeout(lease), cmd).await?;
            Ok(before.as_deref() == Some(announcement.as_str()))
        })
    }

    fn hold(
        &self,
        me: &Instance,
        ports: &[SitePort],
        lease: Duration,
    ) -> StateFuture<'_, Vec<Holding>> {
        let head = vec![
            self.prefix.clone(),
            me.id.clone(),
            lease.as_millis().max(1).to_string(),
            me.link.to_string(),
            me.incarnation.to_string(),
        ];
        let mut batches: Vec<Vec<String>> = Vec::new();
        for chunk in ports.chunks(HOLD_BATCH) {
            let mut args = head.clone();
            for port in chunk {
                args.push(port.digest());
                args.push(serde_json::to_string(port).unwrap_or_default());
                args.push(port.name.clone());
                args.push(vspc_concentrator::compact_hex(&port.uuid));
            }
            batches.push(args);
        }
        if batches.is_empty() {
            batches.push(head);
        }
        let count = ports.len();
        Box::pin(async move {
            let mut answers = Vec::with_capacity(count);
            for args in batches {
                let holders: Vec<String> = self.script(lease_timeout(lease), HOLD, args).await?;
                answers.extend(holders.into_iter().map(|holder| {
                    if holder.is_empty() {
                        Holding::Held
                    } else {
                        Holding::HeldBy(holder)
                    }
                }));
            }
            Ok(answers)
        })
    }

    fn release(&self, me: &Instance, ports: &[SitePort]) -> StateFuture<'_, ()> {
        let mut args = vec![
            self.prefix.clone(),
            me.id.clone(),
            me.incarnation.to_string(),
        ];
        for port in ports {
            args.push(port.digest());
            args.push(port.name.clone());
            args.push(vspc_concentrator::compact_hex(&port.uuid));
        }
        Box::pin(async move {
            let released = self.script::<i64>(lease_timeout(Duration::MAX), RELEASE, args);
            released.await.map(drop)
        })
    }

    fn locate(&self, selector: &str) -> StateFuture<'_, Vec<SiteVm>> {
        let parsed = SiteSelector::parse(selector);
        Box::pin(async move {
            let Some(selector) = parsed else {
                return Ok(Vec::new());
            };
            let index = match &selector.who {
                Who::Name(name) => format!("name:{name}"),
                Who::Uuid(compact) => format!("uuid:{compact}"),
            };
            let found = self.held(LOCATE, vec![self.prefix.clone(), index]).await?;
            Ok(found
                .into_iter()
                .filter(|vm| vm.port.matches(&selector))
                .collect())
        })
    }

    fn site(&self) -> StateFuture<'_, Vec<SiteVm>> {
        Box::pin(async move { self.held(SITE, vec![self.prefix.clone()]).await })
    }

    fn site_token(&self) -> StateFuture<'_, String> {
        Box::pin(async move {
            let key = self.key("site", "token");
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(fresh_token()?).arg("NX");
            self.query::<Option<String>>(REDIS_TIMEOUT, set).await?;
            let mut get = redis::cmd("GET");
            get.arg(&key);
            let token: Option<String> = self.query(REDIS_TIMEOUT, get).await?;
            token.ok_or_else(|| SharedStateError::Unavailable("the site token vanished".into()))
        })
    }
}
