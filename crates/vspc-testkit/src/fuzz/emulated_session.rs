//! Invariants of a concentrator built on vspc-proto's Endpoint (its ProxySessions and vMotion
//! Coordinator), driven by emulated ESXi hosts (vspc-emulator's Lab) through fuzzer-chosen
//! scenarios: operations, faults, read splits, segmentation, proxy answers and timings. Shared
//! by the fuzz target `emulated_session` and the corpus replay test of vspc-emulator.
//!
//! Checked: no panic; bounded memory (bytes in flight and held); every vMotion that did not
//! complete leaves the VM on its source; and, unless a fault that legitimately loses bytes
//! was injected, every byte clients sent reaches the VM exactly once and in order (across any
//! vMotion) and every VM byte reaches every client exactly once and in order.
//!
//! The scenario is parsed by hand from the bytes (no `arbitrary`), so the stable replay test
//! needs no extra dependency. Layout: 4 configuration bytes, then operations of one opcode
//! byte and its arguments; missing bytes read as zero.
use std::time::{Duration, Instant};

use super::Input;

use vspc_emulator::lab::{BeginAnswer, ClientMode, Lab, LabConfig};
use vspc_emulator::vspc_proto::{CoordinatorConfig, ProxyConfig};
use vspc_emulator::{
    EmulatedVm, EmulatorConfig, EmulatorEvent, Fault, FinOrder, OutputConfig, Pattern, Rate,
    Segmentation, VmIdentity, VmotionOutcome, VmotionPlan,
};

/// Upper bound on operations and on simulated time, so every input runs in milliseconds.
const MAX_OPS: usize = 256;
const MAX_SIMULATED: Duration = Duration::from_secs(120);
/// Bytes the proxy may owe the VM at any moment: what clients can send in one operation plus
/// the hold buffer plus protocol chatter.
const MAX_IN_FLIGHT: usize = 64 * 1024;

fn segmentation(code: u8) -> Segmentation {
    match code % 4 {
        0 | 1 => Segmentation::Esxi,
        2 => Segmentation::EveryByte,
        _ => Segmentation::Random {
            seed: u64::from(code),
            max: usize::from(code >> 2) + 1,
        },
    }
}

/// Checks every invariant on one input; panics on a violation.
pub fn check(input: &[u8]) {
    let mut input = Input::new(input);
    let flags = input.byte();
    let chunk_code = input.byte();
    let seg_code = input.byte();
    let timing = input.byte();

    let mut vm = EmulatorConfig::new(VmIdentity::numbered(u64::from(timing)));
    vm.output = Some(OutputConfig {
        pattern: Pattern::Noise {
            seed: u64::from(flags),
        },
        rate: Rate::new(
            usize::from(timing % 32) + 1,
            Duration::from_millis(u64::from(timing >> 5) * 10 + 5),
        ),
        // Bounded, so the final settle does not tick the generator for a simulated minute:
        // that made a scenario cost ~140 ms and the fuzzer crawl at 7 runs/s.
        limit: Some(u64::from(timing) * 64 + 256),
    });
    vm.segmentation = segmentation(seg_code);
    vm.port.start_connected = flags & 0x80 == 0;
    vm.reconnect_after = (flags & 0x40 != 0).then_some(Duration::from_millis(300));
    let config = LabConfig {
        proxy: ProxyConfig {
            max_held: if flags & 0x20 != 0 { 64 } else { 64 * 1024 },
            max_subnegotiation: 512,
            ..ProxyConfig::default()
        },
        coordinator: CoordinatorConfig {
            secret_len: usize::from(flags & 0x07) + 1,
            vmotion_timeout: Duration::from_secs(30),
            ..CoordinatorConfig::default()
        },
        secret_seed: u64::from(chunk_code),
        begin_answer: match (flags >> 3) & 0x03 {
            0 | 1 => BeginAnswer::Coordinator,
            2 => BeginAnswer::NotNow,
            _ => BeginAnswer::Delayed(Duration::from_millis(u64::from(timing) * 40)),
        },
        clients: vec![ClientMode::ReadWrite, ClientMode::ReadOnly],
        client_pattern: Pattern::Noise {
            seed: u64::from(seg_code) << 8,
        },
        read_chunk: match chunk_code % 4 {
            0 => usize::MAX,
            1 => 1,
            _ => usize::from(chunk_code >> 2) + 1,
        },
        vm_read_budget: (chunk_code & 0x80 != 0)
            .then(|| (usize::from(chunk_code & 0x3f) + 1, Duration::from_millis(1))),
        answer_peer: seg_code & 0x80 == 0,
        max_kept: 64,
    };
    #[allow(clippy::disallowed_methods)] // the harness is the driver: any start instant will do
    let start = Instant::now();
    let mut lab = Lab::new(start, vm, config);
    let now = lab.now();
    lab.vm_mut().power_on(now);
    lab.run();

    // Bytes may be lost legitimately after these (the proxy or the host dropped a connection
    // with bytes in it); the exactness checks are off from then on.
    let mut lossy = false;
    let mut seen_events = 0;
    let mut source_of_vmotion = None;
    let mut simulated = Duration::ZERO;

    for _ in 0..MAX_OPS {
        if input.is_empty() {
            break;
        }
        let op = input.byte();
        let arg = input.byte();
        let now = lab.now();
        // Closing a connection while a vMotion or a proxy-side hold is under way, or with
        // client bytes the VM has not read yet (a slow reader), drops them by design (a host
        // that powers off does not read its socket first); such operations count as lossy.
        let busy = lab.vm().is_migrating()
            || lab.in_flight() > 0
            || lab
                .current()
                .and_then(|c| lab.session(c))
                .is_some_and(|s| s.is_holding());
        match op % 12 {
            0 | 1 => lab.client_send(usize::from(arg) * 4),
            2 | 3 => {
                let by = Duration::from_millis(u64::from(arg) * u64::from(op / 12 + 1) * 8);
                let by = by.min(MAX_SIMULATED.saturating_sub(simulated));
                simulated += by;
                lab.advance(by);
            }
            4 => {
                let mut sequence = input.take(4);
                if sequence.is_empty() {
                    sequence.push(arg);
                }
                let mut plan = VmotionPlan::new(sequence);
                plan.fin_order = if arg & 1 == 0 {
                    FinOrder::FinBeforeComplete
                } else {
                    FinOrder::FinAfterComplete
                };
                if arg & 0x06 == 0x06 {
                    plan.wrong_secret = Some(vec![arg; 8].into());
                }
                let source = lab.vm().current_conn();
                if lab.vm_mut().start_vmotion(now, plan).is_ok() {
                    source_of_vmotion = source;
                }
                lab.run();
            }
            5 => {
                lossy |= busy;
                let _ = lab.vm_mut().set_connected(now, arg & 1 == 0);
                lab.run();
            }
            6 => {
                lossy |= busy;
                if lab.vm().is_powered_on() {
                    lab.vm_mut().power_off();
                } else {
                    lab.vm_mut().power_on(now);
                }
                lab.run();
            }
            7 => {
                if let Some(conn) = lab.vm().current_conn() {
                    lossy |= busy;
                    lab.proxy_close(conn);
                }
            }
            8 => {
                let fault = match arg % 3 {
                    0 => Fault::TelnetNoise,
                    1 => Fault::UnknownSuboption {
                        code: 100 + arg % 100,
                        payload: input.take(usize::from(arg % 8)).into(),
                    },
                    _ => Fault::OversizedSubnegotiation {
                        len: usize::from(arg) * 8,
                    },
                };
                let _ = lab.vm_mut().inject(fault);
                lab.run();
            }
            9 => {
                let fault = match arg % 3 {
                    0 => Fault::Garbage(input.take(usize::from(arg % 16)).into()),
                    1 => Fault::AbruptClose,
                    _ => Fault::Silence,
                };
                lossy |= lab.vm_mut().inject(fault).is_ok();
                lab.run();
            }
            10 => {
                lab.vm_mut().set_segmentation(segmentation(arg));
            }
            _ => {
                if arg == 0xff {
                    lab.vm_mut().kill_host();
                    lossy = true;
                }
            }
        }

        // Bounded memory.
        let in_flight = lab.in_flight() + lab.vm().pending_transmit_len();
        assert!(in_flight <= MAX_IN_FLIGHT, "{in_flight} bytes in flight");

        // A vMotion that did not complete leaves the VM on its source.
        let events = lab.vm_events();
        for event in &events[seen_events.min(events.len())..] {
            if let EmulatorEvent::Vmotion(outcome) = event {
                let reconfigured = op % 12 == 5 || op % 12 == 6;
                match outcome {
                    VmotionOutcome::Refused
                    | VmotionOutcome::Cancelled
                    | VmotionOutcome::Aborted { .. }
                        if !lossy && !reconfigured =>
                    {
                        assert_eq!(
                            lab.vm().current_conn(),
                            source_of_vmotion,
                            "{outcome:?} moved the VM"
                        );
                        // The proxy may not have identified the VM yet (a slow reader still
                        // in its handshake is refused as unidentified), but it never points
                        // anywhere but the source.
                        let proxy = lab.current();
                        assert!(
                            proxy.is_none() || proxy == source_of_vmotion,
                            "{outcome:?}: proxy on {proxy:?}, source {source_of_vmotion:?}"
                        );
                    }
                    VmotionOutcome::Completed { to, .. } => {
                        assert_ne!(Some(*to), source_of_vmotion);
                    }
                    _ => {}
                }
            }
        }
        seen_events = events.len();
    }

    // Let every timer fire (held data expires after 30 s) and every byte arrive.
    lab.advance(Duration::from_secs(61));
    lab.advance(Duration::from_secs(1));
    if !lossy {
        if let Err(violation) = lab.check() {
            panic!("{violation}");
        }
    }
    let vm: &EmulatedVm = lab.vm();
    assert!(vm.recorder().kept().len() <= vm.config().max_recorded);
}
