//! A "virtual IP" in front of concentrator instances: each new connection goes to the first
//! instance of its list that is up and accepts, byte for byte both ways. A test takes an
//! instance down (new connections skip it), or severs it as a partition would: the VMs' side
//! of its connections is closed (they reconnect, and reach another instance) while the
//! instance's side stays open and silent, so the instance learns of nothing on that socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::WAIT;

/// What each connection sent toward its instance, kept up to this many bytes (a
/// destination's handshake is a few hundred).
const RECORDED: usize = 64 * 1024;

#[derive(Default)]
struct State {
    /// Instances in order of preference, and whether each is up.
    targets: Vec<(SocketAddr, bool)>,
    /// Per connection: its instance, and the first bytes the VM sent.
    sent: Vec<(SocketAddr, Vec<u8>)>,
    /// Severed connections whose instance side has closed since.
    closed_severed: usize,
}

/// The virtual IP (its relays run until the test ends).
pub struct Vip {
    /// Where VMs connect.
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Bumped to sever the connections to an instance.
    sever: watch::Sender<Option<SocketAddr>>,
}

impl Vip {
    /// A virtual IP for `targets`, the first preferred.
    pub async fn start(targets: &[SocketAddr]) -> Vip {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            targets: targets.iter().map(|t| (*t, true)).collect(),
            ..State::default()
        }));
        let (sever, _) = watch::channel(None);
        let vip = Vip {
            addr,
            state: state.clone(),
            sever: sever.clone(),
        };
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(relay(inbound, state.clone(), sever.subscribe()));
            }
        });
        vip
    }

    /// New connections skip (`false`) or reach again (`true`) `target`.
    pub fn set_up(&self, target: SocketAddr, up: bool) {
        let mut state = self.state.lock().unwrap();
        for (addr, is_up) in &mut state.targets {
            if *addr == target {
                *is_up = up;
            }
        }
    }

    /// A partition between the VMs and `target`: it is taken down, and its connections'
    /// VM side closed while its own side stays open, unread and unwritten.
    pub fn sever(&self, target: SocketAddr) {
        self.set_up(target, false);
        self.sever.send_replace(Some(target));
    }

    /// Waits (bounded) until `count` severed connections were closed by their instance.
    pub async fn wait_severed_closed(&self, count: usize) {
        let deadline = Instant::now() + WAIT;
        while self.state.lock().unwrap().closed_severed < count {
            assert!(
                Instant::now() < deadline,
                "the instance did not close its severed connection"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// What each connection to `target` sent toward it (its first bytes), in order.
    pub fn sent_to(&self, target: SocketAddr) -> Vec<Vec<u8>> {
        let state = self.state.lock().unwrap();
        state
            .sent
            .iter()
            .filter(|(t, _)| *t == target)
            .map(|(_, bytes)| bytes.clone())
            .collect()
    }
}

/// Connects `inbound` to the first instance up that accepts, and relays until either side
/// closes or the connection is severed.
async fn relay(
    mut inbound: TcpStream,
    state: Arc<Mutex<State>>,
    mut sever: watch::Receiver<Option<SocketAddr>>,
) {
    let targets: Vec<SocketAddr> = {
        let state = state.lock().unwrap();
        state
            .targets
            .iter()
            .filter(|(_, up)| *up)
            .map(|(t, _)| *t)
            .collect()
    };
    let mut chosen = None;
    for target in targets {
        if let Ok(stream) = TcpStream::connect(target).await {
            chosen = Some((target, stream));
            break;
        }
    }
    let Some((target, mut outbound)) = chosen else {
        return;
    };
    let index = {
        let mut state = state.lock().unwrap();
        state.sent.push((target, Vec::new()));
        state.sent.len() - 1
    };
    sever.mark_unchanged();
    let cut = {
        let (mut from_vm, mut to_vm) = inbound.split();
        let (mut from_instance, mut to_instance) = outbound.split();
        let upstream = async {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match from_vm.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                {
                    let mut state = state.lock().unwrap();
                    let kept = &mut state.sent[index].1;
                    let room = RECORDED.saturating_sub(kept.len()).min(n);
                    kept.extend_from_slice(&buf[..room]);
                }
                if tokio::io::AsyncWriteExt::write_all(&mut to_instance, &buf[..n])
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        let downstream = tokio::io::copy(&mut from_instance, &mut to_vm);
        let severed = async {
            loop {
                if sever.changed().await.is_err() {
                    return std::future::pending().await;
                }
                if *sever.borrow_and_update() == Some(target) {
                    return;
                }
            }
        };
        tokio::select! {
            _ = upstream => false,
            _ = downstream => false,
            _ = severed => true,
        }
    };
    if !cut {
        // One side closed: close the other (dropping both halves' stream).
        return;
    }
    // The VM's side closes now; the instance's side is kept, silent, until its instance
    // closes it.
    drop(inbound);
    let mut buf = [0u8; 1024];
    while let Ok(n) = outbound.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    state.lock().unwrap().closed_severed += 1;
}
