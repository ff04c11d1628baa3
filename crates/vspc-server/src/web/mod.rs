//! The web console (`[web]`, the `web` feature): a page listing the VM ports with live
//! updates, and a terminal per VM (xterm.js, shipped in the binary) over a WebSocket.
//!
//! | path | what |
//! |---|---|
//! | `/` | the page (`/?token=...` sets the token cookie and redirects here) |
//! | `/api/vms` | the VM listing (what the admin port's `/vms` returns) |
//! | `/api/events` | the live listing: server-sent events |
//! | `/ws/terminal?vm=SELECTOR&mode=ro\|rw\|excl` | a terminal: binary WebSocket messages both ways |
//!
//! Every request needs the token (see [`auth`]). HTTP/1.1 on axum; HTTPS with
//! `web.tls_cert` and `web.tls_key` (the telnets loader).

mod auth;
mod live;
mod terminal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::header::{
    CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, LOCATION, SET_COOKIE, WWW_AUTHENTICATE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::{IncomingStream, Listener};
use axum::{Extension, Router};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use vspc_concentrator::Mode;

use crate::config::WebConfig;
use crate::{ConfigError, ServerError, Shared};

use auth::{Access, Principal};

/// Bytes the WebSocket layer may hold toward one page (a page that stops reading is cut off
/// by the core's output budget long before; this bounds the frames in flight).
const MAX_WRITE_BUFFER: usize = 256 * 1024;

/// TLS handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 64;

/// The keepIdle model of the console's connections: a page whose network vanished (a laptop
/// put to sleep) frees its terminal about five minutes later, not never.
const KEEP_IDLE_SECS: u32 = 300;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The files of the page, served from the binary: (path, content type, bytes).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../../web/index.html"),
    ),
    (
        "/app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/app.js"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/app.css"),
    ),
    (
        "/vendor/xterm.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/xterm.mjs"),
    ),
    (
        "/vendor/addon-fit.mjs",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/vendor/addon-fit.mjs"),
    ),
    (
        "/vendor/xterm.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/vendor/xterm.css"),
    ),
    (
        "/vendor/LICENSE-xterm",
        "text/plain; charset=utf-8",
        include_bytes!("../../web/vendor/LICENSE-xterm"),
    ),
    (
        "/vendor/LICENSE-addon-fit",
        "text/plain; charset=utf-8",
        include_bytes!("../../web/vendor/LICENSE-addon-fit"),
    ),
];

/// The page's policy: its own scripts only, connections to itself only, never framed.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                   frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// A connection's remote address, from a plain or a TLS listener.
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

#[derive(Clone)]
struct App {
    shared: Arc<Shared>,
    access: Arc<Access>,
    /// Permits for pages following the live listing.
    listeners: Arc<Semaphore>,
    max_message: usize,
    /// Served over HTTPS (the cookie is then `Secure`).
    secure: bool,
}

/// A running console.
pub(crate) struct Web {
    pub(crate) addr: SocketAddr,
    /// The page's address with the token (`/?token=...`).
    pub(crate) url: String,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// Serves the console on `listener` until shutdown.
pub(crate) fn start(
    shared: &Arc<Shared>,
    config: &WebConfig,
    listener: TcpListener,
) -> Result<Web, ServerError> {
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: config
            .listen
            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))),
        source,
    })?;
    let generated = config.token.is_none();
    let token = match &config.token {
        Some(token) => token.clone(),
        None => auth::random_token().ok_or_else(|| {
            ConfigError::Invalid("no randomness for a web console token: set web.token".into())
        })?,
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/?token={token}");
    let app = App {
        shared: shared.clone(),
        access: Arc::new(Access::new(token)),
        listeners: Arc::new(Semaphore::new(config.max_listeners)),
        max_message: config.max_message,
        secure: tls.is_some(),
    };
    let router = router(app).into_make_service_with_connect_info::<Peer>();
    let mut stop = shared.stop.subscribe();
    let stopped = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let task = match tls {
        None => {
            let listener = PlainListener(listener);
            tokio::spawn(async move {
                let served = axum::serve(listener, router).with_graceful_shutdown(stopped);
                if let Err(error) = served.await {
                    tracing::warn!(%error, "web console stopped");
                }
            })
        }
        Some(tls) => {
            let listener = TlsListener::start(shared.clone(), listener, tls.acceptor, addr);
            tokio::spawn(async move {
                let served = axum::serve(listener, router).with_graceful_shutdown(stopped);
                if let Err(error) = served.await {
                    tracing::warn!(%error, "web console stopped");
                }
            })
        }
    };
    if generated {
        tracing::info!(%url, "web console (token generated at start; set web.token to fix it)");
    } else {
        tracing::info!("web console: {scheme}://{addr}/ (with ?token=web.token)");
    }
    if !addr.ip().is_loopback() && scheme == "http" {
        tracing::warn!(
            %addr,
            "the web console is reachable beyond loopback without TLS: its token and every \
             console byte cross the network in clear; set web.tls_cert and web.tls_key"
        );
    }
    Ok(Web { addr, url, task })
}

fn router(app: App) -> Router {
    Router::new()
        .route("/api/vms", get(vms))
        .route("/api/events", get(events))
        .route("/ws/terminal", get(terminal))
        .fallback(get(asset))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard))
        .with_state(app)
}

/// Admits a request carrying the token (and turns `/?token=...` into the cookie), refuses
/// every other; then adds the headers every response carries.
async fn guard(State(app): State<App>, mut request: Request, next: Next) -> Response {
    if request.uri().path() == "/" {
        let token = request
            .uri()
            .query()
            .into_iter()
            .flat_map(|q| q.split('&'))
            .filter_map(|pair| pair.split_once('='))
            .find_map(|(name, value)| (name == "token").then_some(value));
        if let Some(token) = token {
            if !app.access.token_matches(token) {
                return unauthorized();
            }
            let secure = if app.secure { "; Secure" } else { "" };
            let cookie = format!(
                "{}={token}; Path=/; HttpOnly; SameSite=Strict{secure}",
                auth::COOKIE_NAME
            );
            // The token leaves the address bar (and the history) at once.
            let mut response = StatusCode::SEE_OTHER.into_response();
            let headers = response.headers_mut();
            headers.insert(LOCATION, HeaderValue::from_static("/"));
            if let Ok(cookie) = HeaderValue::from_str(&cookie) {
                headers.insert(SET_COOKIE, cookie);
            }
            return secured(response);
        }
    }
    let Some(principal) = app.access.authenticate(request.headers()) else {
        return unauthorized();
    };
    request.extensions_mut().insert(principal);
    secured(next.run(request).await)
}

fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "vspc web console: open the address printed at start (/?token=...), or send \
         Authorization: Bearer <web.token>\n",
    )
        .into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"vspc\""),
    );
    secured(response)
}

/// The headers every response carries: never cached, never sniffed, never framed.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    response
}

async fn asset(request: Request) -> Response {
    match ASSETS
        .iter()
        .find(|(path, _, _)| *path == request.uri().path())
    {
        Some((_, content_type, bytes)) => ([(CONTENT_TYPE, *content_type)], *bytes).into_response(),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}

async fn vms(State(app): State<App>) -> Response {
    let listing = crate::admin::listing(&app.shared);
    (
        [(CONTENT_TYPE, "application/json")],
        serde_json::to_string_pretty(&listing).unwrap_or_default() + "\n",
    )
        .into_response()
}

async fn events(State(app): State<App>, headers: HeaderMap) -> Response {
    if !auth::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin request refused\n").into_response();
    }
    match app.listeners.clone().try_acquire_owned() {
        Ok(permit) => live::stream(app.shared.clone(), permit).into_response(),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many pages follow the listing (web.max_listeners)\n",
        )
            .into_response(),
    }
}

/// `/ws/terminal`'s query.
#[derive(serde::Deserialize)]
struct TerminalQuery {
    /// A VM selector, as on the client port: entry number, name[/label] or UUID.
    vm: String,
    /// `ro`, `rw` (the default) or `excl`.
    mode: Option<String>,
}

async fn terminal(
    State(app): State<App>,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<TerminalQuery>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !auth::same_origin(&headers) {
        return (StatusCode::FORBIDDEN, "cross-origin WebSocket refused\n").into_response();
    }
    let Some(mode) = query
        .mode
        .as_deref()
        .map_or(Some(Mode::ReadWrite), Mode::parse)
    else {
        return (StatusCode::BAD_REQUEST, "mode must be ro, rw or excl\n").into_response();
    };
    let resolved = app.shared.lock().core.resolve(&query.vm);
    let vm = match resolved {
        Ok(vm) => vm,
        Err(error) => return (StatusCode::NOT_FOUND, format!("vspc: {error}\n")).into_response(),
    };
    if !app.access.may_attach(&principal, vm, mode) {
        return (StatusCode::FORBIDDEN, "not allowed\n").into_response();
    }
    let shared = app.shared.clone();
    upgrade
        .max_message_size(app.max_message)
        .max_frame_size(app.max_message)
        .write_buffer_size(MAX_WRITE_BUFFER / 4)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let request = terminal::Request {
                peer,
                vm,
                mode,
                principal,
            };
            terminal::serve(shared, socket, request)
        })
}

/// HTTP: every connection without Nagle's delay (keys typed into a terminal), and with TCP
/// keepalive.
struct PlainListener(TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (stream, peer) = Listener::accept(&mut self.0).await;
        crate::vm_conn::set_keepalive(&stream, KEEP_IDLE_SECS);
        (stream, peer)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Listener::local_addr(&self.0)
    }
}

/// HTTPS: connections accepted and their TLS handshakes done off the serving loop (a slow
/// handshake delays no other connection), handed over through a channel.
struct TlsListener {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn start(
        shared: Arc<Shared>,
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        addr: SocketAddr,
    ) -> TlsListener {
        let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            crate::accept_loop(&shared, listener, "web", |stream, peer| {
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "web: too many TLS handshakes at once; closed");
                    return;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    crate::vm_conn::set_keepalive(&stream, KEEP_IDLE_SECS);
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "web: TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "web: TLS handshake timed out"),
                    }
                });
            })
            .await;
        });
        TlsListener { rx, addr }
    }
}

impl Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(accepted) => accepted,
            // The acceptor stopped (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.addr)
    }
}
