//! A client that reads at full speed is never dropped as slow, whatever the VM's burst: the
//! output budget counts how far a client is behind its writer, not what one scheduling slice
//! of VM reads queued, and the VM's task yields between reads so writers run. The proxy runs
//! on a runtime of its own (one worker, the default), the VM on another, the reader on a
//! thread of its own. (Without both changes the first burst dropped the reader.)
#![allow(clippy::disallowed_methods)]

mod support;

use std::time::Instant;

use std::io::{Read, Write};

use support::*;
use vspc_server::{Server, ServerConfig};

/// Bytes per burst, and bursts per worker-thread setting.
const BURST: usize = 64 << 20;
const RUNS: usize = 20;

fn burst_of_one_vm(workers: usize) {
    let proxy_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let proxy = proxy_runtime
        .block_on(Server::start(ServerConfig::ephemeral()))
        .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The reader: a plain blocking socket on a thread of its own, like `cat` (no 0xFF in
    // the pattern, so after the banner the bytes on the wire are the VM's bytes).
    let mut reader = std::net::TcpStream::connect(proxy.client_addr).unwrap();
    reader.set_read_timeout(Some(WAIT)).unwrap();
    runtime.block_on(async {
        let vm = TestVm::start(vm_config(40), Target::plain(proxy.vm_addrs[0]));
        identified(&proxy, "vm-00040").await;
        reader.write_all(b"vm-00040\r\n").unwrap();
        skip_banner(&mut reader);
        let burst: Vec<u8> = (0..BURST).map(|i| (i % 251) as u8).collect();
        let burst = std::sync::Arc::new(burst);
        for run in 0..RUNS {
            let started = Instant::now();
            let expected = burst.clone();
            let mut socket = reader.try_clone().unwrap();
            let read = std::thread::spawn(move || read_exactly(&mut socket, &expected));
            // One write of the whole burst: the proxy reads it as fast as loopback allows.
            vm.with(|vm, _| vm.send_serial(&burst)).unwrap();
            while !read.is_finished() {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            read.join().unwrap();
            eprintln!(
                "workers {workers}, run {run}: {} MiB in {:?}",
                BURST >> 20,
                started.elapsed()
            );
        }
        let text = proxy.handle().metrics_text();
        assert!(
            text.contains("vspc_clients_dropped_slow_total 0\n"),
            "{text}"
        );
    });
    proxy_runtime.block_on(proxy.shutdown());
}

/// Reads up to and including the attach banner.
fn skip_banner(reader: &mut std::net::TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b")]\r\n") {
        reader.read_exact(&mut byte).unwrap();
        seen.push(byte[0]);
        assert!(
            seen.len() < 64 * 1024,
            "no banner: {:?}",
            String::from_utf8_lossy(&seen)
        );
    }
}

/// Reads `expected.len()` bytes at full speed and checks them.
fn read_exactly(reader: &mut std::net::TcpStream, expected: &[u8]) {
    let mut got = vec![0u8; expected.len()];
    let mut at = 0;
    while at < got.len() {
        let n = reader.read(&mut got[at..]).unwrap();
        assert!(n > 0, "closed after {at} bytes");
        if got[at..at + n] != expected[at..at + n] {
            let bad = (at..at + n).find(|&i| got[i] != expected[i]).unwrap_or(at);
            panic!(
                "byte {bad}: got {:?}",
                String::from_utf8_lossy(&got[bad..(at + n).min(bad + 80)])
            );
        }
        at += n;
    }
}

#[test]
fn a_full_speed_reader_gets_every_burst_at_one_worker() {
    burst_of_one_vm(1);
}

#[test]
fn a_full_speed_reader_gets_every_burst_at_two_workers() {
    burst_of_one_vm(2);
}
