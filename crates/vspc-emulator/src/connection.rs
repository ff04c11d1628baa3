//! One emulated host's TCP connection to the proxy: [`VmSession`] plus what makes the bytes
//! leave as ESXi's do, write for write.
//!
//! `VmSession` decides *what* the VM says; this layer decides *when each write ends*, from
//! ESXi's captures (`docs/esxi-wire.md` in the repository):
//! - ESXi answers `DO 232` only once the proxy has answered its `WILL AUTHENTICATION` (in both
//!   captured handshakes `WILL 232` follows the proxy's `DONT AUTHENTICATION`, never its
//!   `DO 232`): the `DO 232` is withheld until then, or until `auth_wait` passes.
//! - Negotiation replies to one read share one write.
//! - Each option-232 message a read asks for (VM-VC-UUID, VM-NAME, ...) is a write of its own.
//! - `WILL 232` ends a write; KNOWN-SUBOPTIONS-1 starts the next, which also carries DO-PROXY
//!   (source) or VMOTION-PEER and `WILL COM-PORT` (destination).
//!
//! To know where one read's items end, the input goes through a shadow [`Decoder`] first and
//! is fed to the session item by item; the session's own decoding is unchanged by where the
//! input is cut (the codec is resumable at every byte).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_proto::vspc_telnet::{option, Decoder, Event, Verb};
use vspc_proto::{VmConfig, VmEvent, VmSession};

use crate::fault::{segment, Cuts, Segmentation};

const IAC: u8 = 255;
const SB: u8 = 250;
const DO: u8 = 253;

/// Identifies one connection of an [`EmulatedVm`](crate::EmulatedVm) (unique per VM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

#[derive(Debug)]
pub(crate) struct HostConnection {
    pub(crate) id: ConnId,
    session: VmSession,
    shadow: Decoder,
    auth_settled: bool,
    /// The withheld `DO 232` and the time after which it is answered anyway.
    deferred_do_ext: Option<Instant>,
    auth_wait: Duration,
    /// Whole writes, ESXi's cut, before segmentation.
    writes: VecDeque<Bytes>,
    /// Negotiation replies of the read being processed.
    batch: Vec<u8>,
    segmentation: Segmentation,
    cuts: Cuts,
    /// A silent (dead) host: reads are dropped and nothing is written.
    pub(crate) silent: bool,
    events: VecDeque<VmEvent>,
}

impl HostConnection {
    pub(crate) fn new(
        now: Instant,
        id: ConnId,
        config: VmConfig,
        segmentation: Segmentation,
        auth_wait: Duration,
    ) -> Self {
        let shadow = Decoder::with_max_subnegotiation(config.max_subnegotiation);
        let mut conn = HostConnection {
            id,
            session: VmSession::new(now, config),
            shadow,
            auth_settled: false,
            deferred_do_ext: None,
            auth_wait,
            writes: VecDeque::new(),
            batch: Vec::new(),
            segmentation,
            cuts: Cuts::new(id.0 ^ segmentation_seed(segmentation)),
            silent: false,
            events: VecDeque::new(),
        };
        conn.take_output_as_write();
        conn
    }

    pub(crate) fn session_mut(&mut self) -> &mut VmSession {
        &mut self.session
    }

    pub(crate) fn set_segmentation(&mut self, segmentation: Segmentation) {
        self.segmentation = segmentation;
        self.cuts = Cuts::new(self.id.0 ^ segmentation_seed(segmentation));
    }

    /// Feeds one read from the proxy.
    pub(crate) fn handle_input(&mut self, now: Instant, input: &[u8]) {
        if self.silent {
            return;
        }
        let mut rest = input;
        let mut fed = 0;
        loop {
            let before = input.len() - rest.len();
            let Some(event) = self.shadow.next_event(&mut rest) else {
                break;
            };
            let after = input.len() - rest.len();
            match event {
                Event::Data(_) | Event::Command(_) => {}
                Event::Negotiation { verb, option } => {
                    let item = &input[before..after];
                    let whole_do_ext =
                        verb == Verb::Do && option == option::VMWARE_EXT && item == [IAC, DO, 232];
                    if whole_do_ext && !self.auth_settled {
                        // Feed what precedes it and withhold the DO 232 itself.
                        self.feed(now, &input[fed..before]);
                        self.take_output_into_batch();
                        self.deferred_do_ext = Some(now + self.auth_wait);
                        fed = after;
                        continue;
                    }
                    self.feed(now, &input[fed..after]);
                    fed = after;
                    self.take_output_into_batch();
                    if option == option::AUTHENTICATION && !self.auth_settled {
                        self.auth_settled = true;
                        self.release_do_ext(now);
                    }
                }
                Event::Subnegotiation { .. } | Event::Error(_) => {
                    self.flush_batch();
                    self.feed(now, &input[fed..after]);
                    fed = after;
                    self.take_output_as_write();
                }
            }
        }
        self.feed(now, &input[fed..]);
        self.take_output_into_batch();
        self.flush_batch();
    }

    fn feed(&mut self, now: Instant, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.session.handle_input_slice(now, bytes);
        while let Some(event) = self.session.poll_event() {
            self.events.push_back(event);
        }
    }

    fn release_do_ext(&mut self, now: Instant) {
        if self.deferred_do_ext.take().is_some() {
            self.feed(now, &[IAC, DO, 232]);
            self.take_output_into_batch();
        }
    }

    /// Session output produced by negotiation: replies join the batch; from the first
    /// subnegotiation on (the handshake after `WILL 232`) it is a write of its own.
    fn take_output_into_batch(&mut self) {
        while let Some(out) = self.session.poll_transmit() {
            match out.windows(2).position(|w| w == [IAC, SB]) {
                Some(at) => {
                    self.batch.extend_from_slice(&out[..at]);
                    self.flush_batch();
                    self.writes.push_back(out.slice(at..));
                }
                None => self.batch.extend_from_slice(&out),
            }
        }
    }

    fn flush_batch(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.writes.push_back(Bytes::from(batch));
        }
    }

    /// Whatever the session queued, as one write (without a copy when it queued one piece,
    /// as for serial output: bulk output is not copied twice).
    pub(crate) fn take_output_as_write(&mut self) {
        self.flush_batch();
        let mut single: Option<Bytes> = None;
        let mut joined = Vec::new();
        while let Some(out) = self.session.poll_transmit() {
            if let Some(first) = single.take() {
                joined.extend_from_slice(&first);
            }
            if joined.is_empty() {
                single = Some(out);
            } else {
                joined.extend_from_slice(&out);
            }
        }
        let write = single.unwrap_or_else(|| Bytes::from(joined));
        if !write.is_empty() {
            self.writes.push_back(write);
        }
    }

    /// Bytes written as they are, bypassing the session (faults).
    pub(crate) fn write_raw(&mut self, bytes: Bytes) {
        self.take_output_as_write();
        if !bytes.is_empty() {
            self.writes.push_back(bytes);
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        if self.silent {
            return;
        }
        if self.deferred_do_ext.is_some_and(|at| at <= now) {
            self.auth_settled = true;
            self.release_do_ext(now);
            self.flush_batch();
        }
        if self.session.poll_timeout().is_some_and(|at| at <= now) {
            self.session.handle_timeout(now);
            self.take_output_as_write();
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        if self.silent {
            return None;
        }
        [self.deferred_do_ext, self.session.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    pub(crate) fn poll_event(&mut self) -> Option<VmEvent> {
        self.events.pop_front()
    }

    /// The next write as the proxy sees it (after segmentation); a silent host's are dropped.
    pub(crate) fn drain_writes(&mut self, mut out: impl FnMut(Bytes)) {
        while let Some(write) = self.writes.pop_front() {
            if self.silent {
                continue;
            }
            segment(write, self.segmentation, &mut self.cuts, &mut out);
        }
    }

    pub(crate) fn pending_write_len(&self) -> usize {
        self.writes.iter().map(Bytes::len).sum::<usize>() + self.batch.len()
    }
}

fn segmentation_seed(segmentation: Segmentation) -> u64 {
    match segmentation {
        Segmentation::Random { seed, .. } => seed,
        _ => 0,
    }
}
