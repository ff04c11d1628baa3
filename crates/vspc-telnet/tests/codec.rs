//! `TelnetCodec` through `tokio_util::codec`: the same frames whatever the chunking of the
//! input, exact bytes on the wire, and both ends of a real loopback connection.
#![cfg(feature = "tokio-codec")]

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead};
use vspc_telnet::{option, Command, DecodeError, TelnetCodec, TelnetFrame, Verb};

/// ESXi-like traffic: negotiation, data with escaped 0xFF, an option-232 subnegotiation with
/// an escaped 0xFF in its payload, a NOP, an oversized subnegotiation and more data.
fn stream() -> (Vec<u8>, Vec<TelnetFrame>) {
    let mut wire = Vec::new();
    wire.extend_from_slice(b"\xff\xfb\x00\xff\xfd\x00");
    wire.extend_from_slice(b"boot: \xff\xff\x01\r\n");
    wire.extend_from_slice(b"\xff\xfa\xe8\x28\x01\xff\xff\x02\xff\xf0");
    wire.extend_from_slice(b"\xff\xf1");
    wire.extend_from_slice(b"\xff\xfa\x18");
    wire.extend_from_slice(&[b'x'; 40]);
    wire.extend_from_slice(b"\xff\xf0login: ");
    let frames = vec![
        TelnetFrame::Negotiation {
            verb: Verb::Will,
            option: option::BINARY,
        },
        TelnetFrame::Negotiation {
            verb: Verb::Do,
            option: option::BINARY,
        },
        TelnetFrame::Data(Bytes::from_static(b"boot: \xff\x01\r\n")),
        TelnetFrame::Subnegotiation {
            option: option::VMWARE_EXT,
            payload: Bytes::from_static(b"\x28\x01\xff\x02"),
        },
        TelnetFrame::Command(Command::Nop),
        TelnetFrame::Error(DecodeError::SubnegotiationTooLong {
            option: 0x18,
            limit: 32,
        }),
        TelnetFrame::Data(Bytes::from_static(b"login: ")),
    ];
    (wire, frames)
}

/// Joins consecutive data frames (the codec may split one run of data at chunk boundaries
/// and at `IAC IAC`).
fn coalesce(frames: Vec<TelnetFrame>) -> Vec<TelnetFrame> {
    let mut out: Vec<TelnetFrame> = Vec::new();
    for frame in frames {
        match (out.last_mut(), frame) {
            (Some(TelnetFrame::Data(prev)), TelnetFrame::Data(more)) => {
                let mut joined = BytesMut::from(&prev[..]);
                joined.extend_from_slice(&more);
                *prev = joined.freeze();
            }
            (_, frame) => out.push(frame),
        }
    }
    out
}

#[tokio::test]
async fn every_chunking_through_framed_read_gives_the_same_frames() {
    let (wire, expected) = stream();
    for chunk in [1, 2, 3, 5, 7, 16, 64, wire.len()] {
        // A duplex pipe of `chunk` bytes: every read returns at most `chunk` bytes.
        let (mut writer, reader) = tokio::io::duplex(chunk);
        let input = wire.clone();
        let feeder = tokio::spawn(async move {
            for piece in input.chunks(chunk) {
                writer.write_all(piece).await.unwrap();
            }
        });
        let codec = TelnetCodec::with_max_subnegotiation(32);
        let frames: Vec<TelnetFrame> = FramedRead::new(reader, codec)
            .map(|frame| frame.unwrap())
            .collect()
            .await;
        feeder.await.unwrap();
        assert_eq!(coalesce(frames), expected, "chunks of {chunk}");
    }
}

#[test]
fn whole_data_and_subnegotiations_share_the_read_buffer() {
    let mut codec = TelnetCodec::new();
    let mut buffer = BytesMut::from(&b"console\xff\xfa\xe8\x46SvSPC.py\xff\xf0"[..]);
    let start = buffer.as_ptr() as usize;
    let Some(TelnetFrame::Data(data)) = codec.decode(&mut buffer).unwrap() else {
        panic!("data first")
    };
    assert_eq!(
        (&data[..], data.as_ptr() as usize),
        (&b"console"[..], start)
    );
    let Some(TelnetFrame::Subnegotiation { option, payload }) = codec.decode(&mut buffer).unwrap()
    else {
        panic!("then the subnegotiation")
    };
    assert_eq!(option, option::VMWARE_EXT);
    assert_eq!(&payload[..], b"\x46SvSPC.py");
    assert_eq!(payload.as_ptr() as usize, start + 10);
    assert_eq!(codec.decode(&mut buffer).unwrap(), None);
    assert!(buffer.is_empty());
}

#[test]
fn frames_are_encoded_to_exact_bytes() {
    let mut codec = TelnetCodec::new();
    let mut wire = BytesMut::new();
    for frame in [
        TelnetFrame::Negotiation {
            verb: Verb::Will,
            option: option::VMWARE_EXT,
        },
        TelnetFrame::Subnegotiation {
            option: option::VMWARE_EXT,
            payload: Bytes::from_static(b"\x29\x01\xff"),
        },
        TelnetFrame::Command(Command::Nop),
        // NVT: a CR not followed by LF goes out as CR NUL; 0xFF is doubled.
        TelnetFrame::Data(Bytes::from_static(b"a\rb\xff")),
    ] {
        codec.encode(frame, &mut wire).unwrap();
    }
    codec.set_binary_send(true);
    codec
        .encode(TelnetFrame::Data(Bytes::from_static(b"c\r")), &mut wire)
        .unwrap();
    assert_eq!(
        &wire[..],
        b"\xff\xfb\xe8\xff\xfa\xe8\x29\x01\xff\xff\xff\xf0\xff\xf1a\r\x00b\xff\xffc\r"
    );
    let error = codec
        .encode(
            TelnetFrame::Error(DecodeError::SubnegotiationTooLong {
                option: 0,
                limit: 1,
            }),
            &mut wire,
        )
        .unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn both_ends_of_a_loopback_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut telnet = Framed::new(socket, TelnetCodec::new());
        // Offer BINARY, wait for the answer, then echo one data frame back.
        telnet
            .send(TelnetFrame::Negotiation {
                verb: Verb::Will,
                option: option::BINARY,
            })
            .await
            .unwrap();
        let answer = telnet.next().await.unwrap().unwrap();
        assert_eq!(
            answer,
            TelnetFrame::Negotiation {
                verb: Verb::Do,
                option: option::BINARY
            }
        );
        telnet.codec_mut().set_binary_send(true);
        // The client's CR (NVT on its side: a CR without LF, kept) and 0xFF, in as many
        // frames as TCP delivers them.
        let mut data = BytesMut::new();
        while data.len() < 2 {
            match telnet.next().await {
                Some(Ok(TelnetFrame::Data(more))) => data.extend_from_slice(&more),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(&data[..], b"\r\xff");
        telnet.send(TelnetFrame::Data(data.freeze())).await.unwrap();
    });
    // The client side reads and writes raw bytes, to see the wire exactly.
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut offer = [0; 3];
    client.read_exact(&mut offer).await.unwrap();
    assert_eq!(&offer, b"\xff\xfb\x00");
    client.write_all(b"\xff\xfd\x00\r\xff\xff").await.unwrap();
    let mut echo = [0; 3];
    client.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"\r\xff\xff");
    server.await.unwrap();
}
