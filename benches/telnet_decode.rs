//! Decoder throughput against the public Rust telnet crates and the memchr floor, on the same
//! input in the same run (the targets and the method: docs/performance.md).
//!
//! Input: 64 MiB per workload, fed in 16 KiB chunks, BINARY in effect (as on a VM connection):
//! - `console`: 80-column ASCII lines, no IAC;
//! - `binary`: random bytes, 0xFF escaped as IAC IAC;
//! - `chatty`: short lines interleaved with option-232 messages and NOPs.
//!
//! Run: `cargo bench --bench telnet_decode` (set `VSPC_BENCH_MIB` to change the size).

#![allow(missing_docs)] // criterion_group! generates undocumented items

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use vspc::telnet::{encode_command, encode_data, encode_subnegotiation, Command, Decoder, Event};
use vspc_testkit::Xorshift;

const CHUNK: usize = 16 * 1024;

/// A contestant: decodes the whole input in chunks, returns a checksum of what it saw.
type Decode = fn(&[u8]) -> usize;

fn input_size() -> usize {
    std::env::var("VSPC_BENCH_MIB")
        .ok()
        .and_then(|mib| mib.parse::<usize>().ok())
        .unwrap_or(64)
        * 1024
        * 1024
}

fn console(size: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(0x9e37_79b9_7f4a_7c15);
    let mut out = Vec::with_capacity(size + 128);
    let mut line = 0u64;
    while out.len() < size {
        let start = out.len();
        out.extend_from_slice(format!("[{:>6}.{:06}] ", line / 1000, line % 1_000_000).as_bytes());
        while out.len() - start < 78 {
            out.push(b" abcdefghijklmnopqrstuvwxyz0123456789:=/-"[(rng.next_u64() % 41) as usize]);
        }
        out.extend_from_slice(b"\r\n");
        line += 1;
    }
    out.truncate(size);
    out
}

fn binary(size: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(0x2545_f491_4f6c_dd1d);
    let mut out = Vec::with_capacity(size + 2 * CHUNK);
    let mut raw = vec![0u8; CHUNK];
    while out.len() < size {
        for byte in raw.iter_mut() {
            *byte = rng.next_u64() as u8;
        }
        encode_data(&raw, true, &mut out);
    }
    // Cut on an item boundary: never between the two bytes of an IAC IAC.
    let mut end = size;
    while out[..end].iter().rev().take_while(|&&b| b == 0xff).count() % 2 == 1 {
        end -= 1;
    }
    out.truncate(end);
    out
}

fn chatty(size: usize) -> Vec<u8> {
    let mut rng = Xorshift::new(0x1234_5678_9abc_def1);
    let mut out = Vec::with_capacity(size + 128);
    let mut sequence = 0u32;
    while out.len() < size {
        let len = 8 + (rng.next_u64() % 32) as usize;
        let line: Vec<u8> = (0..len)
            .map(|_| b"abcdefghijklmnopqrstuvwxyz "[(rng.next_u64() % 27) as usize])
            .collect();
        encode_data(&line, true, &mut out);
        out.extend_from_slice(b"\r\n");
        match rng.next_u64() % 4 {
            0 => encode_command(Command::Nop, &mut out),
            1 => {
                let mut payload = vec![0x28];
                payload.extend_from_slice(&sequence.to_be_bytes());
                sequence = sequence.wrapping_add(0x0101_01ff);
                encode_subnegotiation(232, &payload, &mut out);
            }
            2 => encode_subnegotiation(232, b"\x52vm-00000", &mut out),
            _ => encode_subnegotiation(232, &[0x51], &mut out),
        }
    }
    // Cut after the last complete item.
    let mut decoder = Decoder::new();
    decoder.set_binary(true);
    let mut end = 0;
    let mut rest = &out[..size.min(out.len())];
    let total = rest.len();
    while decoder.next_event(&mut rest).is_some() {
        if decoder.is_idle() {
            end = total - rest.len();
        }
    }
    out.truncate(end);
    out
}

fn run_vspc(input: &[u8]) -> usize {
    let mut decoder = Decoder::new();
    decoder.set_binary(true);
    let mut total = 0;
    for chunk in input.chunks(CHUNK) {
        let mut rest = chunk;
        while let Some(event) = decoder.next_event(&mut rest) {
            total += match event {
                Event::Data(data) => data.len(),
                Event::Subnegotiation { payload, .. } => payload.len() + 1,
                _ => 1,
            };
        }
    }
    total
}

fn run_telnet_endpoint(input: &[u8]) -> usize {
    use vspc::telnet::{option, Policy, Telnet, TelnetConfig, TelnetEvent};
    let policy = Policy::new().accept_both(option::BINARY);
    let mut telnet = Telnet::new(TelnetConfig {
        policy,
        ..TelnetConfig::default()
    });
    let mut total = 0;
    telnet.decode(b"\xff\xfb\x00", |_| {});
    for chunk in input.chunks(CHUNK) {
        let mut rest = chunk;
        while let Some(event) = telnet.next_event(&mut rest) {
            total += match event {
                TelnetEvent::Data(data) => data.len(),
                TelnetEvent::Subnegotiation { payload, .. } => payload.len() + 1,
                _ => 1,
            };
        }
    }
    total
}

/// libmudtelnet is a fork of libtelnet-rs: same API, so one body serves both.
macro_rules! run_public_crate {
    ($name:ident, $krate:ident) => {
        fn $name(input: &[u8]) -> usize {
            use $krate::events::TelnetEvents;
            let mut parser = $krate::Parser::new();
            let mut total = 0;
            for chunk in input.chunks(CHUNK) {
                for event in parser.receive(chunk) {
                    total += match event {
                        TelnetEvents::DataReceive(data) => data.len(),
                        TelnetEvents::Subnegotiation(sub) => sub.buffer.len() + 1,
                        _ => 1,
                    };
                }
            }
            total
        }
    };
}

run_public_crate!(run_libmudtelnet, libmudtelnet);
run_public_crate!(run_libtelnet_rs, libtelnet_rs);

fn run_memchr_floor(input: &[u8]) -> usize {
    input
        .chunks(CHUNK)
        .map(|chunk| memchr::memchr_iter(0xff, chunk).count())
        .sum()
}

fn telnet_decode(c: &mut Criterion) {
    let size = input_size();
    let workloads = [
        ("console", console(size)),
        ("binary", binary(size)),
        ("chatty", chatty(size)),
    ];
    let contestants: [(&str, Decode); 5] = [
        ("vspc-telnet", run_vspc),
        ("vspc-telnet-endpoint", run_telnet_endpoint),
        ("libmudtelnet", run_libmudtelnet),
        ("libtelnet-rs", run_libtelnet_rs),
        ("memchr-floor", run_memchr_floor),
    ];
    for (name, input) in &workloads {
        let mut group = c.benchmark_group(format!("telnet_decode/{name}"));
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.sample_size(10);
        group.warm_up_time(std::time::Duration::from_millis(500));
        group.measurement_time(std::time::Duration::from_secs(3));
        for (contestant, run) in contestants {
            group.bench_with_input(
                BenchmarkId::from_parameter(contestant),
                input,
                |b, input| b.iter(|| black_box(run(black_box(input)))),
            );
        }
        group.finish();
    }
}

criterion_group!(benches, telnet_decode);
criterion_main!(benches);
