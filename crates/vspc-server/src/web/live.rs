//! The live VM listing: a server-sent event stream. The first event is the whole listing
//! (what `GET /api/vms` returns); then each VM event (added, moved, reconnected, ...) is
//! sent as it happens, followed by the listing when it changed. Changes that raise no VM
//! event (clients attaching, byte counters) reach the page at the next refresh.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};

use crate::embed::VmEvent;
use crate::Shared;

/// How often the listing is looked at for changes no VM event announces.
const REFRESH: Duration = Duration::from_secs(1);

/// VM events that arrive this close together are sent with one listing after them.
const COALESCE: Duration = Duration::from_millis(20);

struct State {
    shared: Arc<Shared>,
    events: mpsc::Receiver<VmEvent>,
    stop: watch::Receiver<bool>,
    refresh: tokio::time::Interval,
    /// The listing last sent; `None` before the first.
    last: Option<String>,
    /// VM events read and not sent yet.
    backlog: VecDeque<VmEvent>,
    _permit: OwnedSemaphorePermit,
}

/// The event stream of one page (holding one of the `web.max_listeners` permits).
pub(crate) fn stream(
    shared: Arc<Shared>,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let events = shared.lock().subscribe_vm_events();
    let stop = shared.stop.subscribe();
    let mut refresh = tokio::time::interval(REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = State {
        shared,
        events,
        stop,
        refresh,
        last: None,
        backlog: VecDeque::new(),
        _permit: permit,
    };
    Sse::new(futures_util::stream::unfold(state, next)).keep_alive(KeepAlive::default())
}

async fn next(mut state: State) -> Option<(Result<Event, Infallible>, State)> {
    loop {
        if let Some(event) = state.backlog.pop_front() {
            return Some((Ok(vm_event(&event)), state));
        }
        let listing = crate::admin::listing(&state.shared).to_string();
        if state.last.as_ref() != Some(&listing) {
            let event = Event::default().event("listing").data(&listing);
            state.last = Some(listing);
            return Some((Ok(event), state));
        }
        tokio::select! {
            event = state.events.recv() => {
                // A subscriber cut off for falling behind ends the stream: the page's
                // EventSource reconnects and starts from a fresh listing.
                state.backlog.push_back(event?);
                tokio::time::sleep(COALESCE).await;
                while let Ok(event) = state.events.try_recv() {
                    state.backlog.push_back(event);
                }
            }
            _ = state.refresh.tick() => {}
            _ = stopped(&mut state.stop) => return None,
        }
    }
}

/// Resolves at shutdown (the watch's guard is dropped inside: it must not live across the
/// stream's other awaits).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One VM event as the page sees it: `{"vm": id, "event": "moved", ...}`.
fn vm_event(event: &VmEvent) -> Event {
    let data = match event {
        VmEvent::Added {
            vm, name, label, ..
        } => json!({"vm": vm.0, "event": "added", "name": name, "label": label}),
        VmEvent::Reconnected { vm } => json!({"vm": vm.0, "event": "reconnected"}),
        VmEvent::Renamed { vm, name } => json!({"vm": vm.0, "event": "renamed", "name": name}),
        VmEvent::Moved { vm } => json!({"vm": vm.0, "event": "moved"}),
        VmEvent::Disconnected { vm } => json!({"vm": vm.0, "event": "disconnected"}),
        VmEvent::Removed { vm } => json!({"vm": vm.0, "event": "removed"}),
    };
    Event::default().event("vm").data(data.to_string())
}
