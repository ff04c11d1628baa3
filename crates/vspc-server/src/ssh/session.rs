//! One SSH connection's handler: public-key authentication against the key set, then each
//! session channel (`shell` or `exec`) served as a raw core client by the shared client
//! tasks.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::Instrument;

use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use vspc_concentrator::{ClientSetup, Transport, User};

use super::auth::fingerprint;
use super::{KillSwitch, SshState};
use crate::client::{run_client, StreamSink, StreamSource, GOODBYE_TIMEOUT};
use crate::Shared;

/// How long closing a finished session's channel may take before the connection is cut off
/// (its peer may have stopped reading).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Sessions one connection may open at once.
const MAX_CHANNELS: usize = 8;

pub(crate) struct Connection {
    shared: Arc<Shared>,
    state: Arc<SshState>,
    peer: SocketAddr,
    switch: Arc<KillSwitch>,
    /// Set once a session is served (the authentication deadline no longer applies).
    started: Arc<AtomicBool>,
    /// The authenticated user and the SSH user name it logged in as (its request).
    user: Option<(Arc<User>, String)>,
    /// Session channels opened, not yet started.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    pub(crate) fn new(
        shared: Arc<Shared>,
        state: Arc<SshState>,
        peer: SocketAddr,
        switch: Arc<KillSwitch>,
        started: Arc<AtomicBool>,
    ) -> Connection {
        Connection {
            shared,
            state,
            peer,
            switch,
            started,
            user: None,
            channels: HashMap::new(),
        }
    }

    fn reject(&self, login: &str, key: &PublicKey, reason: &str) -> Auth {
        self.state.audit.record(
            "auth-fail",
            &[
                ("peer", &self.peer),
                ("login", &login),
                ("key", &fingerprint(key)),
                ("reason", &reason),
            ],
        );
        Auth::reject()
    }

    /// Serves `channel` as a client asking for `request` (the command, else the login).
    fn start(
        &mut self,
        id: ChannelId,
        command: Option<String>,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let (Some(channel), Some((user, login))) = (self.channels.remove(&id), &self.user) else {
            return session.channel_failure(id);
        };
        session.channel_success(id)?;
        self.started.store(true, Ordering::Release);
        let request = command
            .map(|c| c.trim().to_owned())
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| login.clone());
        let setup = ClientSetup::new(Transport::Raw)
            .user(user.clone())
            .escape(true)
            .request(request);
        let (shared, peer, switch) = (self.shared.clone(), self.peer, self.switch.clone());
        let handle = session.handle();
        let exit_handle = handle.clone();
        tokio::spawn(async move {
            let (reader, writer) = tokio::io::split(channel.into_stream());
            // The exit status goes before the EOF that ends the output: `ssh` then exits 0
            // where it would report a lost connection (255).
            let writer = ExitOnShutdown {
                inner: writer,
                exit: Some(Box::pin(async move {
                    exit_handle.exit_status_request(id, 0).await.ok();
                })),
            };
            serve(shared, peer, setup, reader, writer).await;
            let closed = tokio::time::timeout(CLOSE_TIMEOUT, handle.close(id)).await;
            if closed.is_err() {
                switch.kill();
            }
        });
        Ok(())
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        login: &str,
        key: &PublicKey,
    ) -> Result<Auth, Self::Error> {
        Ok(match self.state.keys().user(key) {
            Some(_) => Auth::Accept,
            None => self.reject(login, key, "unknown key"),
        })
    }

    async fn auth_publickey(&mut self, login: &str, key: &PublicKey) -> Result<Auth, Self::Error> {
        let Some(user) = self.state.keys().user(key) else {
            return Ok(self.reject(login, key, "unknown key"));
        };
        self.state.audit.record(
            "auth-ok",
            &[
                ("peer", &self.peer),
                ("login", &login),
                ("key", &fingerprint(key)),
                ("user", &user.name),
            ],
        );
        self.user = Some((user, login.to_owned()));
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.user.is_none() || self.channels.len() >= MAX_CHANNELS {
            reply
                .reject(ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _cols: u32,
        _rows: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // The VM's console is the terminal: nothing to allocate, and its size is the
        // console's business (window changes are ignored).
        session.channel_success(channel)
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start(channel, None, session)
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start(channel, Some(command), session)
    }
}

/// Registers the session with the core as a client set up by `setup`, then runs it with the
/// same reader and writer tasks as a telnet client.
async fn serve<R, W>(
    shared: Arc<Shared>,
    peer: SocketAddr,
    setup: ClientSetup,
    reader: R,
    writer: W,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let registered = {
        let mut hub = shared.lock();
        let result = hub
            .core
            .handle_client_connect_with(Instant::now(), peer, setup);
        let result = result.map(|client| (client, hub.register_client(client)));
        hub.settle();
        result
    };
    match registered {
        Ok((client, signals)) => {
            let span = tracing::info_span!("ssh", client = client.0, %peer);
            run_client(
                shared,
                client,
                signals,
                StreamSource(reader),
                StreamSink(writer),
            )
            .instrument(span)
            .await;
        }
        Err(refused) => {
            tracing::warn!(%peer, %refused, "SSH session refused");
            let mut writer = writer;
            let message = format!("vspc: {refused}\r\n");
            let _ = tokio::time::timeout(GOODBYE_TIMEOUT, async {
                writer.write_all(message.as_bytes()).await?;
                writer.shutdown().await
            })
            .await;
        }
    }
}

/// A channel's writer that sends the exit status when the output ends.
struct ExitOnShutdown<W> {
    inner: W,
    exit: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for ExitOnShutdown<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if let Some(exit) = self.exit.as_mut() {
            ready!(exit.as_mut().poll(cx));
            self.exit = None;
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
