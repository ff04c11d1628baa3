//! Carrying a vMotion's destination connection to the instance that holds the vMotion.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The most a destination may send before its PEER is routed (a destination's handshake is
/// a few hundred bytes): past it, it cannot be carried to another instance.
pub(crate) const MAX_REPLAY: usize = 16 * 1024;

/// How long the owner may take to answer the replayed handshake's PEER.
const OWNER_TIMEOUT: Duration = Duration::from_secs(10);

/// Carries a destination connection to the instance that holds its vMotion (see the module
/// docs): `replay` is everything the destination sent so far.
pub(crate) async fn carry<S>(mut vm: S, replay: Bytes, owner: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let upstream = tokio::time::timeout(OWNER_TIMEOUT, tokio::net::TcpStream::connect(owner)).await;
    let mut upstream = match upstream {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => {
            tracing::warn!(%error, %owner, "cannot reach the vMotion's owner");
            return;
        }
        Err(_) => {
            tracing::warn!("the vMotion's owner did not accept in time");
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if upstream.write_all(&replay).await.is_err() {
        return;
    }
    // The owner answers the whole handshake again; the destination had those answers from
    // us. What is new starts with its answer to the PEER.
    let mut answers = BytesMut::new();
    let start = loop {
        if let Some(at) = peer_answer_at(&answers) {
            break at;
        }
        if answers.len() > MAX_REPLAY {
            tracing::warn!("the owner's answer to the PEER never came");
            return;
        }
        match tokio::time::timeout(OWNER_TIMEOUT, upstream.read_buf(&mut answers)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => {
                tracing::warn!("the owner closed or stalled before answering the PEER");
                return;
            }
        }
    };
    if vm.write_all(&answers[start..]).await.is_err() {
        return;
    }
    tracing::info!(%owner, "destination carried to the vMotion's owner");
    let _ = tokio::io::copy_bidirectional(&mut vm, &mut upstream).await;
}

/// Where the owner's answer to a PEER starts in its output: `IAC SB 232 VMOTION-PEER-OK` or
/// `IAC SB 232 UNKNOWN-SUBOPTION-RCVD-2 44 IAC SE`. What precedes it are telnet commands
/// only (a destination carries no data before its PEER is accepted), so a byte search
/// cannot match inside data.
fn peer_answer_at(output: &[u8]) -> Option<usize> {
    const PEER_OK: &[u8] = &[0xff, 0xfa, 0xe8, 45];
    const REFUSED: &[u8] = &[0xff, 0xfa, 0xe8, 3, 44, 0xff, 0xf0];
    [PEER_OK, REFUSED]
        .iter()
        .filter_map(|needle| output.windows(needle.len()).position(|w| w == *needle))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_answer_is_found_after_the_handshake_answers() {
        let mut output = vec![0xff, 0xfb, 0x00, 0xff, 0xfd, 0xe8];
        output.extend_from_slice(&[0xff, 0xfa, 0xe8, 1, 0, 1, 2, 45, 0xff, 0xf0]);
        let at = output.len();
        output.extend_from_slice(&[0xff, 0xfa, 0xe8, 45, 0x44, 0xda, 0xff, 0xf0]);
        assert_eq!(peer_answer_at(&output), Some(at));
        assert_eq!(peer_answer_at(&output[..at + 3]), None);
        let refused = [0xff, 0xfd, 0x00, 0xff, 0xfa, 0xe8, 3, 44, 0xff, 0xf0];
        assert_eq!(peer_answer_at(&refused), Some(3));
    }
}
