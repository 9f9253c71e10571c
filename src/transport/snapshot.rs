//! `MsgSnap` in chunks: the sender task of one peer ([`run_sender`]), the
//! chunking of a message ([`chunks`]) and its reassembly on the receiving
//! side ([`Reassembly`]).
//!
//! ```text
//! chunk 0: message = MsgSnap with snapshot meta, data empty; data_bytes = N
//! chunk 1..: data (at most SNAPSHOT_CHUNK_BYTES_MAX each), no message
//! receiver: N bytes arrived and the stream ended → one raft Message, data whole
//! ```
//!
//! Invariants: a snapshot runs on its own connection, so a large one never
//! holds up the message stream; every MsgSnap the task takes ends with one
//! `SnapshotStatus`; the receiver never holds more than the announced
//! `data_bytes` and never allocates more than a chunk ahead of what arrived.

use tokio::sync::mpsc;

use super::peer::{stopped, PeerCtx};
use super::{codec, net, CodecError, Inbound, SNAPSHOT_CHUNK_BYTES_MAX};
use crate::proto::concordpb::SnapshotChunk;
use crate::raft::{Message, MessageKind};

/// Why a snapshot transfer failed (sender or receiver side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    #[error("the first snapshot chunk has no message")]
    NoMessage,
    #[error("a snapshot chunk after the first carries a message")]
    UnexpectedMessage,
    #[error("the snapshot message is a {0:?}, not a MsgSnap")]
    NotMsgSnap(MessageKind),
    #[error("the snapshot message has no snapshot")]
    NoSnapshot,
    #[error("invalid snapshot message: {0}")]
    Codec(#[from] CodecError),
    #[error("chunk of {got} bytes exceeds the {max}-byte limit")]
    ChunkTooLarge { got: usize, max: usize },
    #[error("snapshot data exceeds the announced {want} bytes")]
    TooLong { want: u64 },
    #[error("snapshot data ended at {got} of {want} bytes")]
    Truncated { got: u64, want: u64 },
    #[error("snapshot stream is empty")]
    Empty,
}

/// The chunks of a MsgSnap, produced lazily (one data piece copied at a time).
pub(crate) fn chunks(mut m: Message) -> impl Iterator<Item = SnapshotChunk> {
    let data = m
        .snapshot
        .as_mut()
        .map(|s| std::mem::take(&mut s.data))
        .unwrap_or_default();
    let first = SnapshotChunk {
        message: Some(codec::encode(m)),
        data_bytes: data.len() as u64,
        data: Vec::new(),
    };
    let pieces = DataPieces { data, offset: 0 };
    std::iter::once(first).chain(pieces)
}

struct DataPieces {
    data: Vec<u8>,
    offset: usize,
}

impl Iterator for DataPieces {
    type Item = SnapshotChunk;

    fn next(&mut self) -> Option<SnapshotChunk> {
        if self.offset >= self.data.len() {
            return None;
        }
        let end = (self.offset + SNAPSHOT_CHUNK_BYTES_MAX).min(self.data.len());
        let piece = self.data[self.offset..end].to_vec();
        self.offset = end;
        Some(SnapshotChunk {
            message: None,
            data_bytes: 0,
            data: piece,
        })
    }
}

/// A MsgSnap being received.
#[derive(Debug)]
pub(crate) struct Reassembly {
    message: Message,
    data: Vec<u8>,
    want_bytes: u64,
}

impl Reassembly {
    /// Starts from the first chunk (the message and the announced length).
    pub(crate) fn start(first: SnapshotChunk) -> Result<Reassembly, SnapshotError> {
        let wire = first.message.ok_or(SnapshotError::NoMessage)?;
        let message = codec::decode(wire)?;
        if message.kind != MessageKind::MsgSnap {
            return Err(SnapshotError::NotMsgSnap(message.kind));
        }
        if message.snapshot.is_none() {
            return Err(SnapshotError::NoSnapshot);
        }
        let mut r = Reassembly {
            message,
            data: Vec::new(),
            want_bytes: first.data_bytes,
        };
        r.push_data(first.data)?;
        Ok(r)
    }

    /// Appends a following chunk.
    pub(crate) fn push(&mut self, chunk: SnapshotChunk) -> Result<(), SnapshotError> {
        if chunk.message.is_some() {
            return Err(SnapshotError::UnexpectedMessage);
        }
        self.push_data(chunk.data)
    }

    fn push_data(&mut self, data: Vec<u8>) -> Result<(), SnapshotError> {
        if data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
            return Err(SnapshotError::ChunkTooLarge {
                got: data.len(),
                max: SNAPSHOT_CHUNK_BYTES_MAX,
            });
        }
        if self.data.len() as u64 + data.len() as u64 > self.want_bytes {
            return Err(SnapshotError::TooLong {
                want: self.want_bytes,
            });
        }
        if self.data.is_empty() {
            self.data = data;
        } else {
            self.data.extend_from_slice(&data);
        }
        Ok(())
    }

    /// The whole message, if every announced byte arrived.
    pub(crate) fn finish(mut self) -> Result<Message, SnapshotError> {
        let got = self.data.len() as u64;
        if got != self.want_bytes {
            return Err(SnapshotError::Truncated {
                got,
                want: self.want_bytes,
            });
        }
        if let Some(s) = self.message.snapshot.as_mut() {
            s.data = self.data;
        }
        Ok(self.message)
    }
}

/// The peer's snapshot task: sends each queued MsgSnap over `Peer.Snapshot`
/// on a fresh connection and reports `SnapshotStatus` for it.
pub(crate) async fn run_sender(mut ctx: PeerCtx, mut queue: mpsc::Receiver<Message>) {
    let peer = format!("{:x}", ctx.id);
    let dialer = ctx.dialer.clone();
    let mut attempt: u64 = 0;
    loop {
        let m = tokio::select! {
            biased;
            _ = stopped(&mut ctx.stop) => return,
            m = queue.recv() => match m {
                Some(m) => m,
                None => return,
            },
        };
        assert_eq!(m.kind, MessageKind::MsgSnap, "only MsgSnap is queued here");
        let to = m.to;
        let url = ctx.url(attempt);
        let index = m.snapshot.as_ref().map_or(0, |s| s.meta.index);
        let result = tokio::select! {
            biased;
            _ = stopped(&mut ctx.stop) => return,
            r = send_one(&dialer, (ctx.cluster_id, ctx.local_id), &url, m) => r,
        };
        let ok = match result {
            Ok(()) => {
                tracing::info!(%peer, %url, index, "snapshot sent");
                true
            }
            Err(why) => {
                tracing::warn!(%peer, %url, index, %why, "snapshot send failed");
                ctx.report_unreachable();
                attempt += 1;
                false
            }
        };
        // The status must reach raft (it waits for it), so wait for room.
        tokio::select! {
            biased;
            _ = stopped(&mut ctx.stop) => return,
            r = ctx.inbound.send(Inbound::SnapshotStatus { to, ok }) => if r.is_err() {
                return;
            },
        }
    }
}

/// Sends `m` in chunks on a fresh connection; done once the peer's member
/// has the message.
async fn send_one(
    dialer: &super::Dialer,
    (cluster_id, local_id): (u64, u64),
    url: &str,
    m: Message,
) -> Result<(), String> {
    let mut client = dialer
        .connect(url)
        .await
        .map_err(|e| net::error_chain(&e))?;
    let stream = tokio_stream::iter(chunks(m));
    let request = net::request(stream, cluster_id, local_id);
    client
        .snapshot(request)
        .await
        .map(|_| ())
        .map_err(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::{ConfState, Snapshot, SnapshotMeta};

    fn msg_snap(data_bytes: usize) -> Message {
        Message {
            kind: MessageKind::MsgSnap,
            from: 1,
            to: 2,
            term: 3,
            snapshot: Some(Snapshot {
                meta: SnapshotMeta {
                    index: 10,
                    term: 3,
                    conf_state: ConfState::from_voters([1, 2, 3]),
                },
                data: (0..data_bytes).map(|i| (i % 251) as u8).collect(),
            }),
            ..Message::default()
        }
    }

    fn reassemble(
        chunks: impl IntoIterator<Item = SnapshotChunk>,
    ) -> Result<Message, SnapshotError> {
        let mut it = chunks.into_iter();
        let mut r = Reassembly::start(it.next().ok_or(SnapshotError::Empty)?)?;
        for c in it {
            r.push(c)?;
        }
        r.finish()
    }

    /// Sizes around the chunk boundary: 0, 1, one chunk -1/0/+1, 3 chunks + 5.
    #[test]
    fn chunk_and_reassemble() {
        let c = SNAPSHOT_CHUNK_BYTES_MAX;
        for (i, size) in [0, 1, c - 1, c, c + 1, 3 * c + 5].into_iter().enumerate() {
            let want = msg_snap(size);
            let parts: Vec<SnapshotChunk> = chunks(want.clone()).collect();
            let want_chunks = 1 + size.div_ceil(c);
            assert_eq!(
                parts.len(),
                want_chunks,
                "case #{i}: got {} chunks, want {want_chunks}",
                parts.len()
            );
            let first = &parts[0];
            assert!(first.data.is_empty(), "case #{i}: first chunk carries data");
            let meta = first.message.as_ref().and_then(|m| m.snapshot.as_ref());
            assert!(
                meta.is_some_and(|s| s.data.is_empty()),
                "case #{i}: first chunk lacks the meta"
            );
            assert!(parts[1..]
                .iter()
                .all(|p| p.message.is_none() && p.data.len() <= c));
            let got = reassemble(parts);
            assert_eq!(got.as_ref(), Ok(&want), "case #{i} (size {size})");
        }
    }

    #[test]
    fn malformed_streams_are_typed_errors() {
        let two = || chunks(msg_snap(SNAPSHOT_CHUNK_BYTES_MAX + 1)).collect::<Vec<_>>();
        let mut no_message = two();
        no_message[0].message = None;
        let mut truncated = two();
        truncated.pop();
        let mut extra_message = two();
        extra_message[1].message = extra_message[0].message.clone();
        let mut too_long = two();
        too_long.push(SnapshotChunk {
            data: vec![1],
            ..SnapshotChunk::default()
        });
        let mut not_snap = two();
        if let Some(m) = not_snap[0].message.as_mut() {
            m.r#type = codec::encode_kind(MessageKind::MsgApp) as i32;
        }
        let mut big_chunk = two();
        big_chunk[1].data.push(0);
        let mut bad_kind = two();
        if let Some(m) = bad_kind[0].message.as_mut() {
            m.r#type = 1000;
        }
        let want_bytes = SNAPSHOT_CHUNK_BYTES_MAX as u64 + 1;
        let cases = [
            (no_message, SnapshotError::NoMessage),
            (
                truncated,
                SnapshotError::Truncated {
                    got: SNAPSHOT_CHUNK_BYTES_MAX as u64,
                    want: want_bytes,
                },
            ),
            (extra_message, SnapshotError::UnexpectedMessage),
            (too_long, SnapshotError::TooLong { want: want_bytes }),
            (not_snap, SnapshotError::NotMsgSnap(MessageKind::MsgApp)),
            (
                big_chunk,
                SnapshotError::ChunkTooLarge {
                    got: SNAPSHOT_CHUNK_BYTES_MAX + 1,
                    max: SNAPSHOT_CHUNK_BYTES_MAX,
                },
            ),
            (
                bad_kind,
                SnapshotError::Codec(CodecError::UnknownMessageType(1000)),
            ),
            (Vec::new(), SnapshotError::Empty),
        ];
        for (i, (parts, want)) in cases.into_iter().enumerate() {
            let got = reassemble(parts);
            assert_eq!(
                got.as_ref().err(),
                Some(&want),
                "case #{i}: got {got:?}, want {want:?}"
            );
        }
    }
}
