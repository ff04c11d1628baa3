//! A console log collector (OpenStack vmware-vspc's job) on `vspc-server`: one file per VM
//! port, named from its VC UUID, kept across vMotions and reconnects (the entry outlives both).
//! `cargo run --example log_collector -- [DIR] [VM-LISTEN-ADDR]` (console-logs, 127.0.0.1:13370)
#![forbid(unsafe_code)]

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use vspc_server::vspc_concentrator::VmId;
use vspc_server::{sanitize, Handle, Server, ServerConfig};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "console-logs".into()));
    let listen = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:13370".into())
        .parse()?;
    std::fs::create_dir_all(&dir)?;

    let mut config = ServerConfig::default();
    config.vm.listen = vec![listen];
    config.client.listen = "127.0.0.1:0".parse()?;
    config.admin.listen = None;
    let server = Server::start(config).await?;
    println!("vm telnet://{}", server.vm_addrs[0]);

    let (stop, stopped) = tokio::sync::oneshot::channel();
    let collector = tokio::spawn(collect(server.handle(), dir, stopped));
    server
        .run_until(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = term.recv() => {}, _ = tokio::signal::ctrl_c() => {} }
        })
        .await;
    let _ = stop.send(());
    collector.await?;
    Ok(())
}

/// Appends every VM's console to its file until the server stops, then what is left.
async fn collect(handle: Handle, dir: PathBuf, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let mut console = handle.console(None);
    let mut files: HashMap<VmId, File> = HashMap::new();
    let mut taken: HashSet<PathBuf> = HashSet::new();
    let mut stopping = false;
    loop {
        let chunk = if stopping {
            console.try_recv().ok()
        } else {
            tokio::select! {
                chunk = console.recv() => chunk,
                _ = &mut stopped => {
                    stopping = true;
                    console.try_recv().ok()
                }
            }
        };
        let Some(chunk) = chunk else { break };
        let file = match files.entry(chunk.vm) {
            Entry::Occupied(file) => file.into_mut(),
            Entry::Vacant(slot) => {
                let Some(vm) = handle.vm(chunk.vm) else {
                    continue;
                };
                // `{uuid}.log`; a second port of the VM, or a flagged impostor claiming its
                // UUID, gets the entry number too: two entries never share a file.
                let uuid = sanitize(&vm.vc_uuid);
                let mut path = dir.join(format!("{uuid}.log"));
                if !taken.insert(path.clone()) {
                    path = dir.join(format!("{uuid}.{}.log", vm.id.0));
                    taken.insert(path.clone());
                }
                match OpenOptions::new().create(true).append(true).open(&path) {
                    Ok(file) => slot.insert(file),
                    Err(error) => {
                        eprintln!("cannot open {}: {error}", path.display());
                        continue;
                    }
                }
            }
        };
        // Page-cache writes: a memory copy, not a wait on the disk.
        if let Err(error) = file.write_all(&chunk.bytes) {
            eprintln!("console log write failed: {error}");
        }
    }
    if !stopping {
        eprintln!("console subscription ended: the collector fell behind by its whole capacity");
    }
}
