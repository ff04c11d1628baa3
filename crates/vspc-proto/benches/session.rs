//! Session throughput (VM data relayed through a ProxySession, client data sent to the VM),
//! in-memory handshakes per second and vMotions per second. Uses the workspace's test kit, so
//! it is not in the package.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use vspc_proto::*;
use vspc_testkit::esxi::source_vm_config;
use vspc_testkit::pair::converse;

/// A handshake to quiescence; the proxy's event count.
fn pump(now: Instant, vm: &mut VmSession, proxy: &mut ProxySession) -> usize {
    converse(now, vm, proxy, drop)
}

fn established(now: Instant) -> ProxySession {
    let mut vm = VmSession::new(now, source_vm_config());
    let mut proxy = ProxySession::new(SessionId(1), ProxyConfig::default());
    pump(now, &mut vm, &mut proxy);
    assert!(proxy.identity().is_identified());
    proxy
}

fn console_input(len: usize) -> Bytes {
    let line = b"[    1.234567] systemd[1]: Started Journal Service for the serial console.\r\n";
    Bytes::from(line.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

fn binary_input(len: usize) -> Bytes {
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut out = Vec::with_capacity(len + len / 128);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x as u8;
        out.push(b);
        if b == 0xff {
            out.push(0xff);
        }
    }
    Bytes::from(out)
}

fn throughput(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    const TOTAL: usize = 4 << 20;
    const CHUNK: usize = 16 << 10;
    let mut group = c.benchmark_group("proxy_session");
    group.throughput(Throughput::Bytes(TOTAL as u64));
    for (name, input) in [
        ("vm_to_client_console", console_input(TOTAL)),
        ("vm_to_client_binary", binary_input(TOTAL)),
    ] {
        // Bytes the VM meant: every `IAC IAC` is one 0xFF.
        let (mut expected, mut i) = (0, 0);
        while i < input.len() {
            i += if input[i] == 0xff { 2 } else { 1 };
            expected += 1;
        }
        let chunks: Vec<Bytes> = (0..input.len())
            .step_by(CHUNK)
            .map(|i| input.slice(i..(i + CHUNK).min(input.len())))
            .collect();
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                || established(now),
                |proxy| {
                    let mut n = 0usize;
                    for chunk in &chunks {
                        proxy.handle_input(now, chunk);
                        while let Some(event) = proxy.poll_event() {
                            if let ProxyEvent::Data(d) = event {
                                n += d.len();
                            }
                        }
                    }
                    assert_eq!(n, expected);
                    black_box(n)
                },
                BatchSize::LargeInput,
            )
        });
    }
    let data = binary_input(TOTAL);
    group.bench_function("client_to_vm_binary", |b| {
        b.iter_batched_ref(
            || established(now),
            |proxy| {
                let mut n = 0usize;
                for chunk in data.chunks(CHUNK) {
                    proxy.send_data(chunk).unwrap();
                    n += proxy.poll_transmit().map_or(0, |b| b.len());
                }
                black_box(n)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn handshakes(c: &mut Criterion) {
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut group = c.benchmark_group("in_memory");
    group.throughput(Throughput::Elements(1));
    group.bench_function("handshake", |b| {
        b.iter(|| {
            let mut vm = VmSession::new(now, source_vm_config());
            let mut proxy = ProxySession::new(SessionId(1), ProxyConfig::default());
            black_box(pump(now, &mut vm, &mut proxy))
        })
    });
    group.bench_function("vmotion", |b| {
        let mut coord = Coordinator::default();
        let mut id = 0u64;
        b.iter_batched(
            || {
                id += 2;
                let mut vm = VmSession::new(now, source_vm_config());
                let mut proxy = ProxySession::new(SessionId(id), ProxyConfig::default());
                pump(now, &mut vm, &mut proxy);
                (vm, proxy, id)
            },
            |(mut vm, mut src, id)| {
                vm.begin_vmotion(&(id as u32).to_be_bytes());
                while let Some(b) = vm.poll_transmit() {
                    src.handle_input(now, &b);
                }
                while src.poll_event().is_some() {}
                let BeginOutcome::GoAhead { key, .. } = coord.begin(now, &mut src, true) else {
                    panic!("no GOAHEAD")
                };
                let mut config = source_vm_config();
                config.role = VmRole::Destination {
                    sequence: Bytes::copy_from_slice(key.sequence().unwrap()),
                    secret: Bytes::copy_from_slice(key.secret().unwrap()),
                };
                let mut dvm = VmSession::new(now, config);
                let mut dest = ProxySession::new(SessionId(id + 1), ProxyConfig::default());
                pump(now, &mut dvm, &mut dest);
                coord.claim(now, &mut dest);
                pump(now, &mut dvm, &mut dest);
                dvm.complete_vmotion();
                while let Some(b) = dvm.poll_transmit() {
                    dest.handle_input(now, &b);
                }
                while dest.poll_event().is_some() {}
                let outcome = coord.complete(now, &mut dest, &mut src);
                assert!(matches!(outcome, CompleteOutcome::Switched { .. }));
                black_box(outcome)
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, throughput, handshakes);
criterion_main!(benches);
