//! The SSH client listener (feature `ssh`): consoles reachable with keys, per-key grants,
//! kick, and an audit trail. Configured by [`crate::SshConfig`] (`[ssh]`).
//!
//! # Attaching
//! - `ssh -p 2222 NAME@host` attaches to the VM port NAME selects (the menu's selectors:
//!   number, name, `name/label`, UUID), in the best mode the key's grants allow (read-write,
//!   else read-only). Append `+ro`, `+rw` or `+excl` for a mode, `+kick` to take the write
//!   lock from whoever holds it: `ssh -p 2222 web-1+ro@host`.
//! - `ssh -t -p 2222 host NAME` does the same through the command (the login is then
//!   ignored).
//! - A login that selects no VM gets a line saying so and the menu of the VMs the key may
//!   use, as on the telnet port.
//!
//! The session is raw and byte-exact both ways (0xFF, NUL and CR pass unmangled); no
//! terminal is allocated and window size changes are ignored. Password and keyboard
//! authentication are off; keys only.
//!
//! # The in-band escape
//! Ctrl-] (0x1d) then: `b` sends a serial break, `d` detaches (the session ends), `]` sends
//! one literal Ctrl-]. Any other byte after Ctrl-] passes through with it. (`ssh`'s own `~.`
//! escapes are the client's: `ssh -e none` turns them off for binary transfers.)
//!
//! # Users and grants: `authorized_keys`
//! An OpenSSH `authorized_keys` file, read with the ssh-key crate's parser. A key's grants
//! are its `console="PATTERN:RIGHTS"` options (repeatable); RIGHTS is any of `ro`, `rw`,
//! `excl`, `kick` (comma-separated) or `all`; PATTERN is a glob (`*`, `?`) matched against
//! the VM's name, its `name/label` and its VC UUID. Rights add up over the grants that
//! match.
//!
//! ```text
//! # alice watches everything and works on the web servers
//! console="*:ro",console="web-*:rw,excl" ssh-ed25519 AAAAC3Nza... alice@laptop
//! # on-call may take the write lock from anyone (kick)
//! console="*:all" ssh-ed25519 AAAAC3Nza... oncall@ops
//! ```
//!
//! A key's name (told to a user whose lock it takes, in the audit trail and the admin
//! listing) is its comment, or its SHA-256 fingerprint without one. A key without `console`
//! options authenticates but may attach to nothing; an attach outside the grants is refused
//! with a message naming the user, the VM, the mode and what the grants allow there.
//! Options that restrict a key elsewhere (`from=`, `command=`, `expiry-time=`...) are
//! refused as errors rather than silently ignored; flags such as `no-pty` and `restrict`
//! are accepted. A pattern cannot hold spaces (the format's option syntax).
//!
//! The file is read at start-up (an invalid line is an error naming it) and on
//! [`Handle::reload_ssh_keys`](crate::Handle::reload_ssh_keys) (SIGHUP in the example
//! binary), where an invalid file keeps the old set in force.
//!
//! # Host key
//! `host_key` is read as an OpenSSH private key; when the file does not exist an Ed25519
//! key is generated into it (mode 0600). Its fingerprint is logged at start and given by
//! [`Server::ssh_fingerprint`](crate::Server::ssh_fingerprint).
//!
//! # Kick
//! `NAME+kick` (with the `kick` right) attaches exclusively after making every other writer
//! of that VM read-only; each is told `[vspc: USER (ADDR) took the write lock on NAME; you
//! are read-only now]`, as conserver's force-attach does.
//!
//! # Audit trail
//! Connects, authentication (with the key's fingerprint, on failure too), attaches with the
//! mode, kicks, breaks, drops and detaches with the bytes each way are recorded one line
//! each (see [`LogConfig::audit`](crate::LogConfig::audit)).
//!
//! # Why russh
//! Pure Rust on tokio (no C toolchain with its `ring` backend), actively maintained, server
//! and client in one crate (the tests drive many sessions with its client), flow control
//! per channel, and its `keys` module re-exports the RustCrypto ssh-key crate, whose
//! parser reads `authorized_keys` and OpenSSH private keys.

mod auth;
mod session;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use russh::keys::ssh_key::private::Ed25519Keypair;
use russh::keys::ssh_key::LineEnding;
use russh::keys::PrivateKey;
use russh::MethodKind;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::audit::Audit;
use crate::config::SshConfig;
use crate::Shared;
pub(crate) use auth::KeySet;

/// Why the SSH listener could not start, or its keys not reload.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The host key file is not an OpenSSH private key, or cannot be written.
    #[error("host key {path}: {reason}")]
    HostKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A line of the `authorized_keys` file is invalid.
    #[error("{path}, line {line}: {reason}")]
    AuthorizedKeys {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// Why.
        reason: String,
    },
}

/// What every SSH connection shares.
pub(crate) struct SshState {
    config: Arc<russh::server::Config>,
    keys: RwLock<Arc<KeySet>>,
    authorized_keys: PathBuf,
    auth_timeout: Duration,
    pub(crate) audit: Arc<Audit>,
}

impl SshState {
    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads `authorized_keys`; on error the old set stays in force.
    pub(crate) fn reload(&self) -> Result<usize, SshError> {
        let keys = KeySet::load(&self.authorized_keys)?;
        let count = keys.len();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        Ok(count)
    }
}

/// Loads the host key and the users: what [`serve`] needs. The host key is generated on
/// first start; its fingerprint is returned.
pub(crate) fn prepare(
    config: &SshConfig,
    audit: Arc<Audit>,
) -> Result<(Arc<SshState>, String), SshError> {
    let host_key = host_key(&config.host_key)?;
    let fingerprint = auth::fingerprint(host_key.public_key());
    let keys = KeySet::load(&config.authorized_keys)?;
    tracing::info!(
        path = %config.authorized_keys.display(),
        keys = keys.len(),
        "SSH authorized keys loaded"
    );
    let mut methods = russh::MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    let ssh_config = russh::server::Config {
        methods,
        keys: vec![host_key],
        // Rejections take this long whatever the key, so timing tells nothing; the
        // client's first probe ("none") is answered at once.
        auth_rejection_time: Duration::from_millis(100),
        auth_rejection_time_initial: Some(Duration::ZERO),
        // A console may sit idle for days; dead peers are found by keepalives instead.
        inactivity_timeout: None,
        keepalive_interval: Some(Duration::from_secs(60)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    };
    let state = SshState {
        config: Arc::new(ssh_config),
        keys: RwLock::new(Arc::new(keys)),
        authorized_keys: config.authorized_keys.clone(),
        auth_timeout: Duration::from_secs(config.auth_timeout_secs),
        audit,
    };
    Ok((Arc::new(state), fingerprint))
}

/// Accepts SSH connections until shutdown.
pub(crate) async fn serve(shared: Arc<Shared>, state: Arc<SshState>, listener: TcpListener) {
    let accept_shared = shared.clone();
    crate::accept_loop(&accept_shared, listener, "SSH", |stream, peer| {
        tokio::spawn(connection(shared.clone(), state.clone(), stream, peer));
    })
    .await;
}

/// One SSH connection: the handshake and authentication within the timeout, then its
/// sessions until the client leaves (or is cut off: see [`KillSwitch`]).
async fn connection(
    shared: Arc<Shared>,
    state: Arc<SshState>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    state.audit.record("connect", &[("peer", &peer)]);
    let switch = Arc::new(KillSwitch::default());
    let stream = Killable {
        inner: stream,
        switch: switch.clone(),
    };
    let started = Arc::new(AtomicBool::new(false));
    let handler =
        session::Connection::new(shared, state.clone(), peer, switch.clone(), started.clone());
    let config = state.config.clone();
    let run = async move {
        match russh::server::run_stream(config, stream, handler).await {
            Ok(running) => running.await,
            Err(error) => Err(error),
        }
    };
    tokio::pin!(run);
    let result = tokio::select! {
        result = &mut run => Some(result),
        _ = tokio::time::sleep(state.auth_timeout) => None,
    };
    let result = match result {
        Some(result) => result,
        None if !started.load(Ordering::Acquire) => {
            state.audit.record(
                "timeout",
                &[("peer", &peer), ("reason", &"no session opened in time")],
            );
            switch.kill();
            run.await
        }
        None => run.await,
    };
    let reason = match result {
        Ok(()) => "closed".to_owned(),
        Err(error) => error.to_string(),
    };
    state
        .audit
        .record("disconnect", &[("peer", &peer), ("reason", &reason)]);
}

/// The host key at `path`; generated (Ed25519, 0600) when the file does not exist.
fn host_key(path: &Path) -> Result<PrivateKey, SshError> {
    let fail = |reason: String| SshError::HostKey {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_openssh(text).map_err(|e| fail(e.to_string())),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| fail(e.to_string()))?;
            let key = PrivateKey::from(Ed25519Keypair::from_seed(&seed));
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| fail(e.to_string()))?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
            file.write_all(text.as_bytes())
                .map_err(|e| fail(e.to_string()))?;
            tracing::info!(path = %path.display(), "SSH host key generated");
            Ok(key)
        }
        Err(source) => Err(SshError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Cuts a connection off from outside: once killed, every read and write of the stream
/// fails, so russh's session task ends even when its peer stopped reading (a blocked write
/// would otherwise hold it, and its buffers, for as long as the peer stays silent).
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    killed: AtomicBool,
    /// The read and the write waiting on the socket.
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl KillSwitch {
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        let wakers = std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
        for waker in wakers.into_iter().flatten() {
            waker.wake();
        }
    }

    /// Whether killed; otherwise `waker` is woken when it is.
    fn check(&self, slot: usize, waker: &Waker) -> bool {
        if self.killed.load(Ordering::Acquire) {
            return true;
        }
        let mut wakers = self.wakers.lock().unwrap_or_else(|e| e.into_inner());
        match &mut wakers[slot] {
            Some(held) if held.will_wake(waker) => {}
            held => *held = Some(waker.clone()),
        }
        // A kill between the load above and the registration is seen here.
        self.killed.load(Ordering::Acquire)
    }
}

/// A stream that a [`KillSwitch`] can cut off.
struct Killable<S> {
    inner: S,
    switch: Arc<KillSwitch>,
}

fn killed() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::ConnectionAborted, "connection cut off")
}

impl<S: AsyncRead + Unpin> AsyncRead for Killable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.switch.check(0, cx.waker()) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Killable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.switch.check(1, cx.waker()) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.switch.check(1, cx.waker()) {
            return Poll::Ready(Err(killed()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
