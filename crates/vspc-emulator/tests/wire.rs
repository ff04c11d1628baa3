//! Wire fidelity: given the proxy side of each block of ESXi's captures (`docs/esxi-wire.md`),
//! the emulator writes the captured VM side byte for byte and segment for segment, and never
//! later than the capture.
//!
//! The capture records when segments passed the wire, not how ESXi's reads were cut. ESXi
//! answers a read 0.1 to 0.5 ms after it arrives, so proxy segments that arrived while ESXi was
//! busy were read together. The read boundaries below are the ones the timestamps imply (and
//! the only ones under which the captured VM segments are consistent): e.g. in block A the
//! `DO BINARY` at 1.520 ms was read with `WILL SGA` and `WILL ECHO` (their three answers share
//! the segment at 1.914 ms); `DO SGA` (1.772 ms) and `DO 232` (2.039 ms) had both arrived when
//! ESXi answered `WILL SGA` alone at 2.207 ms: it answers `DO 232` only after the proxy's
//! `DONT AUTHENTICATION` (2.692 ms, answered 2.847 ms). Block C shows the same.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use vspc_emulator::*;
use vspc_testkit::esxi::{Line, BLOCK_A, BLOCK_B, BLOCK_C, BLOCK_D, BLOCK_E, UUID_VMX};
use vspc_testkit::{epoch as t0, hex};

/// One connection's part of a replay: a capture block on a clock offset, and ESXi's reads
/// as the number of consecutive proxy segments each one took.
struct Leg {
    /// Which connection, by the order the emulator opened them (0: the source).
    conn: usize,
    block: &'static [Line],
    offset_ms: f64,
    reads: &'static [usize],
}

struct Replay {
    vm: EmulatedVm,
    start: Instant,
    /// Connections in the order they were opened: index 0 is the source.
    conns: Vec<ConnId>,
    writes: BTreeMap<ConnId, Vec<Bytes>>,
    log: Vec<Transmit>,
    events: Vec<EmulatorEvent>,
    fin_order: FinOrder,
}

impl Replay {
    fn new() -> Self {
        Self::with(Segmentation::Esxi)
    }

    fn with(segmentation: Segmentation) -> Self {
        let mut config = EmulatorConfig::new(VmIdentity {
            vc_uuid: UUID_VMX.parse().unwrap(),
            name: "vm-00000".into(),
            bios_uuid: None,
            location_uuid: None,
        });
        config.port.service_uri = Bytes::from_static(b"vSPC.py");
        config.segmentation = segmentation;
        let mut replay = Replay {
            vm: EmulatedVm::new(config),
            start: t0(),
            conns: Vec::new(),
            writes: BTreeMap::new(),
            log: Vec::new(),
            events: Vec::new(),
            fin_order: FinOrder::FinBeforeComplete,
        };
        replay.vm.power_on(replay.start);
        replay.drain();
        replay
    }

    fn at(&self, ms: f64) -> Instant {
        self.start + Duration::from_nanos((ms * 1e6) as u64)
    }

    fn drain(&mut self) {
        while let Some(t) = self.vm.poll_transmit() {
            match &t {
                Transmit::Open { conn } => self.conns.push(*conn),
                Transmit::Write { conn, bytes } => {
                    self.writes.entry(*conn).or_default().push(bytes.clone())
                }
                Transmit::Close { .. } => {}
            }
            self.log.push(t);
        }
        while let Some(e) = self.vm.poll_event() {
            self.events.push(e);
        }
    }

    /// Fires every timer due up to `now`, each at its own deadline.
    fn advance(&mut self, now: Instant) {
        while let Some(deadline) = self.vm.poll_timeout().filter(|d| *d <= now) {
            self.vm.handle_timeout(deadline);
            self.drain();
        }
    }

    fn written(&self, slot: usize) -> Vec<Bytes> {
        self.conns
            .get(slot)
            .and_then(|c| self.writes.get(c))
            .cloned()
            .unwrap_or_default()
    }

    /// Replays the legs merged on one clock; leg `i` is connection slot `i`.
    fn run(&mut self, legs: &[Leg]) {
        enum Step {
            Read(usize, Vec<u8>),
            Vm(usize, usize, Vec<u8>),
        }
        let mut steps: Vec<(f64, usize, Step)> = Vec::new();
        for leg in legs {
            let slot = leg.conn;
            let proxy_lines: Vec<&Line> = leg
                .block
                .iter()
                .filter(|l| !l.1 && !l.2.is_empty())
                .collect();
            assert_eq!(
                leg.reads.iter().sum::<usize>(),
                proxy_lines.len(),
                "read grouping"
            );
            let mut next = 0;
            for &n in leg.reads {
                let group = &proxy_lines[next..next + n];
                next += n;
                let bytes: Vec<u8> = group.iter().flat_map(|l| hex(l.2)).collect();
                let time = group.last().unwrap().0 + leg.offset_ms;
                steps.push((time, steps.len(), Step::Read(slot, bytes)));
            }
            let vm_lines = leg.block.iter().filter(|l| l.1 && !l.2.is_empty());
            for (index, line) in vm_lines.enumerate() {
                let step = Step::Vm(slot, index, hex(line.2));
                steps.push((line.0 + leg.offset_ms, steps.len(), step));
            }
        }
        steps.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (ms, _, step) in steps {
            let now = self.at(ms);
            self.advance(now);
            match step {
                Step::Read(slot, bytes) => {
                    let conn = self.conns[slot];
                    self.vm.handle_input(now, conn, &bytes);
                }
                Step::Vm(slot, index, bytes) => {
                    if bytes[0] != 0xff {
                        self.vm.send_serial(&bytes).unwrap();
                    } else if bytes.starts_with(&[0xff, 0xfa, 0xe8, 0x28]) {
                        let mut plan = VmotionPlan::new(bytes[4..bytes.len() - 2].to_vec());
                        plan.fin_order = self.fin_order;
                        self.vm.start_vmotion(now, plan).unwrap();
                    } else if bytes.starts_with(&[0xff, 0xfa, 0xe8, 0x30]) {
                        // Block E: the destination is never accepted; its connection fails.
                        let dest = self.vm.destination_conn().unwrap();
                        self.vm.handle_closed(now, dest);
                    }
                    self.drain();
                    // Never later than ESXi: this segment has been written by now.
                    let written = self.written(slot);
                    assert!(
                        written.len() > index,
                        "at {ms} ms slot {slot} has {} writes, capture shows segment {index}",
                        written.len()
                    );
                }
            }
            self.drain();
        }
    }
}

fn segments(block: &[Line]) -> Vec<Bytes> {
    block
        .iter()
        .filter(|l| l.1 && !l.2.is_empty())
        .map(|l| Bytes::from(hex(l.2)))
        .collect()
}

/// Block A's reads: `WILL BINARY`; `WILL SGA` + `WILL ECHO` + `DO BINARY`; `DO SGA` +
/// `DO 232`; then one each.
const READS_A: &[usize] = &[1, 3, 2, 1, 1, 1, 1, 1];
/// Block C's reads: `DO BINARY`, `DO SGA` and `DO 232` together (two answered at 1015.006).
const READS_C: &[usize] = &[1, 1, 3, 1, 1, 1, 1, 1];

fn leg(conn: usize, block: &'static [Line], offset_ms: f64, reads: &'static [usize]) -> Leg {
    Leg {
        conn,
        block,
        offset_ms,
        reads,
    }
}

#[test]
fn block_a_segment_for_segment() {
    let mut r = Replay::new();
    r.run(&[leg(0, BLOCK_A, 0.0, READS_A)]);
    assert_eq!(r.written(0), segments(BLOCK_A));
    assert!(r.events.contains(&EmulatorEvent::ProxyAnswered {
        conn: r.conns[0],
        accepted: true
    }));
    assert!(!r
        .events
        .iter()
        .any(|e| matches!(e, EmulatorEvent::ProtocolError { .. })));
}

#[test]
fn block_a_com_port_offer_waits_for_its_delay() {
    let mut r = Replay::new();
    let everything_but_data = &BLOCK_A[..BLOCK_A.len() - 1];
    // Stop before 47.692 ms (45 ms after the handshake): no WILL COM-PORT yet.
    let early: Vec<Line> = everything_but_data
        .iter()
        .copied()
        .filter(|l| l.0 < 47.0)
        .collect();
    let early: &'static [Line] = Box::leak(early.into_boxed_slice());
    r.run(&[leg(0, early, 0.0, &[1, 3, 2, 1, 1, 1, 1])]);
    assert_eq!(r.written(0), segments(early));
    r.advance(r.at(47.6));
    assert_eq!(r.written(0).len(), segments(early).len());
    r.advance(r.at(47.7));
    assert_eq!(r.written(0).last().unwrap(), &Bytes::from(hex("fffb2c")));
}

#[test]
fn blocks_a_d_e_b_c_on_two_hosts_segment_for_segment() {
    let mut r = Replay::new();
    r.run(&[leg(0, BLOCK_A, 0.0, READS_A)]);
    r.run(&[leg(0, BLOCK_D, 10_000.0, &[1])]);
    assert!(r
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Refused)));
    r.run(&[leg(0, BLOCK_E, 20_000.0, &[1])]);
    assert!(r
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Aborted {
            reason: AbortReason::DestinationLost
        })));
    // Block E opened a destination that was never accepted (connection 1); block B's
    // GOAHEAD opens block C's destination (connection 2) on the same clock.
    r.run(&[
        leg(0, BLOCK_B, 30_000.0, &[1]),
        leg(2, BLOCK_C, 30_000.0, READS_C),
    ]);
    assert_eq!(r.conns.len(), 3);
    let (source, dest) = (r.conns[0], r.conns[2]);
    assert!(r.writes[&r.conns[1]].starts_with(&[Bytes::from(hex("fffb25"))]));
    let expected_source: Vec<Bytes> = [BLOCK_A, BLOCK_D, BLOCK_E, BLOCK_B]
        .iter()
        .flat_map(|b| segments(b))
        .collect();
    assert_eq!(r.writes[&source], expected_source);
    assert_eq!(r.writes[&dest], segments(BLOCK_C));
    // The source's FIN went out just before COMPLETE, as in block C.
    let complete = Transmit::Write {
        conn: dest,
        bytes: Bytes::from(hex("fffae82e44da87f1fff0")),
    };
    let at = r.log.iter().position(|t| *t == complete).unwrap();
    assert_eq!(r.log[at - 1], Transmit::Close { conn: source });
    assert!(r
        .events
        .contains(&EmulatorEvent::Vmotion(VmotionOutcome::Completed {
            from: source,
            to: dest
        })));
    assert_eq!(r.vm.current_conn(), Some(dest));
}

#[test]
fn fin_after_complete_swaps_only_the_order() {
    let mut r = Replay::new();
    r.fin_order = FinOrder::FinAfterComplete;
    r.run(&[leg(0, BLOCK_A, 0.0, READS_A)]);
    r.run(&[
        leg(0, BLOCK_B, 1_000.0, &[1]),
        leg(1, BLOCK_C, 1_000.0, READS_C),
    ]);
    let (source, dest) = (r.conns[0], r.conns[1]);
    assert_eq!(r.writes[&dest], segments(BLOCK_C));
    let complete = r
        .log
        .iter()
        .position(|t| matches!(t, Transmit::Write { conn, bytes } if *conn == dest && bytes.starts_with(&[0xff, 0xfa, 0xe8, 0x2e])))
        .unwrap();
    assert_eq!(r.log[complete + 1], Transmit::Close { conn: source });
}

#[test]
fn every_byte_segmentation_keeps_the_bytes() {
    let mut r = Replay::with(Segmentation::EveryByte);
    // Reads as captured; the writes are one byte each and concatenate to the capture.
    let mut all = Vec::new();
    for l in BLOCK_A.iter().filter(|l| !l.1) {
        let now = r.at(l.0);
        r.advance(now);
        r.vm.handle_input(now, r.conns[0], &hex(l.2));
        r.drain();
    }
    r.advance(r.at(100.0));
    r.vm.send_serial(b" ").unwrap();
    r.drain();
    for w in r.written(0) {
        assert_eq!(w.len(), 1);
        all.extend_from_slice(&w);
    }
    let expected: Vec<u8> = segments(BLOCK_A).concat();
    assert_eq!(all, expected[..].to_vec());
}
