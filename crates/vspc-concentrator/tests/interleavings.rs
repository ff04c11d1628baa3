//! Random interleavings of VM connections, vMotions (both FIN orders, aborted, expired),
//! reconnects, client attach and detach, typing and time through the concentrator core,
//! checked by `support::scenario`: every client sees its VM's output byte-exact and in
//! order from its attach point, every VM gets each writer's input exactly once, in order,
//! and nothing is left without a wakeup. `PROPTEST_CASES` raises the case count.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use support::scenario::{self, Op, Setup};

fn op() -> impl Strategy<Value = Op> {
    let vm = 0u8..3;
    let client = any::<u8>();
    prop_oneof![
        1 => vm.clone().prop_map(Op::PowerOn),
        1 => vm.clone().prop_map(Op::PowerOff),
        2 => vm.clone().prop_map(Op::Reconnect),
        1 => vm.clone().prop_map(Op::Disconnect),
        1 => vm.clone().prop_map(Op::Cut),
        6 => (vm.clone(), 1u16..300).prop_map(|(v, n)| Op::VmSend(v, n)),
        4 => (vm.clone(), any::<bool>(), prop::bool::weighted(0.2), prop::bool::weighted(0.3))
            .prop_map(|(vm, fin_after, abort, stall)| Op::Vmotion { vm, fin_after, abort, stall }),
        2 => vm.clone().prop_map(Op::Heal),
        1 => (vm.clone(), any::<bool>()).prop_map(|(v, s)| Op::StallVm(v, s)),
        4 => (vm, any::<bool>(), 0u8..4, prop::sample::select(vec![0u8, 0, 0, 1, 2]))
            .prop_map(|(vm, telnet, how, mode)| Op::Connect { vm, telnet, how, mode }),
        1 => client.prop_map(Op::Close),
        8 => (client, 1u16..200).prop_map(|(c, n)| Op::Type(c, n)),
        1 => client.prop_map(Op::Break),
        1 => (client, any::<bool>()).prop_map(|(c, s)| Op::StallClient(c, s)),
        3 => (0u32..12_000).prop_map(Op::Advance),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..=3,
        prop::sample::select(vec![0usize, 0, 1, 3, 64]),
        any::<bool>(),
        prop::sample::select(vec![1024usize, 4096, 1 << 20]),
        prop::sample::select(vec![0usize, 16, 64, 4096]),
        prop::sample::select(vec![64usize, 1 << 16]),
        prop::sample::select(vec![64usize, 256, 1 << 16]),
    )
        .prop_map(
            |(
                vms,
                read_chunk,
                segmented,
                output_budget,
                scrollback,
                max_held,
                max_pending_to_vm,
            )| {
                Setup {
                    vms,
                    read_chunk,
                    segmented,
                    output_budget,
                    scrollback,
                    max_held,
                    max_pending_to_vm,
                    linger: Duration::from_secs(20),
                    ..Setup::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        max_shrink_iters: 2000,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_byte_once_in_order_across_any_interleaving(
        setup in setup(),
        ops in prop::collection::vec(op(), 1..60),
    ) {
        scenario::run(setup, &ops);
    }
}

/// The scenarios that found bugs, kept as they were.
#[test]
fn regressions() {
    // The source closes before COMPLETE (ESXi's usual order) while a client is attached.
    scenario::run(
        Setup::default(),
        &[
            Op::Connect {
                vm: 0,
                telnet: false,
                how: 0,
                mode: 0,
            },
            Op::Vmotion {
                vm: 0,
                fin_after: false,
                abort: false,
                stall: false,
            },
            Op::Type(0, 10),
            Op::VmSend(0, 10),
        ],
    );
    // The source is lost mid-vMotion and the VM reconnects instead: the same entry.
    scenario::run(
        Setup::default(),
        &[
            Op::Connect {
                vm: 0,
                telnet: true,
                how: 2,
                mode: 0,
            },
            Op::Vmotion {
                vm: 0,
                fin_after: false,
                abort: false,
                stall: true,
            },
            Op::Cut(0),
            Op::Reconnect(0),
            Op::Type(0, 10),
            Op::VmSend(0, 10),
        ],
    );
}
