//! One peer's message stream: the task that connects, opens `Peer.Stream`,
//! forwards the peer's queue into it, and reconnects with back-off.
//!
//! ```text
//!            ┌──────────── URLs changed ─────────────┐
//!            ▼                                       │
//!       Connecting ──ok──► Connected (forward queue) ┘
//!         ▲    │                 │ stream broken / rejected / closed
//!         │    └──failed──┐      ▼
//!         │               └► BackingOff: drop queued messages,
//!         └──── delay ─────── report Unreachable; 100 ms, 200 ms, .. 5 s
//! ```
//!
//! An idle stream carries a keep-alive every [`STREAM_IDLE_PING`], so a
//! peer that vanished is noticed (and reported) even when raft is quiet.
//!
//! Invariants: messages leave in queue order; at most one stream per peer
//! is open; the back-off is deterministic (no jitter) and starts over after
//! a stream that lasted [`STREAM_HEALTHY_AFTER`]; the task ends when stopped
//! or when the transport drops the queue, and never waits on anything
//! without also watching stop.

use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::{codec, net, Inbound, PeerStatus};
use crate::proto::concordpb::RaftMessage;
use crate::raft::Message;

/// First delay after a failure.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A stream that lasted this long was healthy: the back-off starts over.
/// (Resetting on every connection would retry a peer that accepts and then
/// fails every stream, such as one of another cluster, every 100 ms.)
const STREAM_HEALTHY_AFTER: Duration = Duration::from_secs(1);
/// An idle stream carries a keep-alive this often, so a vanished peer is
/// noticed without traffic (the gRPC stream only fails on a send; under
/// madsim there are no HTTP/2 pings at all).
const STREAM_IDLE_PING: Duration = Duration::from_secs(1);
/// Encoded messages handed to gRPC but not yet sent; lost if the stream breaks.
const STREAM_BUFFER_MESSAGES: usize = 64;

/// What a peer's tasks share.
#[derive(Clone)]
pub(crate) struct PeerCtx {
    pub id: u64,
    pub local_id: u64,
    pub cluster_id: u64,
    pub inbound: mpsc::Sender<Inbound>,
    pub dialer: super::Dialer,
    pub urls: watch::Receiver<Vec<String>>,
    pub stop: watch::Receiver<bool>,
}

impl PeerCtx {
    /// Advisory report: never waits (a full mailbox loses it).
    pub(crate) fn report_unreachable(&self) {
        if self
            .inbound
            .try_send(Inbound::Unreachable(self.id))
            .is_err()
        {
            tracing::debug!(peer = %format_args!("{:x}", self.id), "mailbox full; Unreachable not reported");
        }
    }

    /// The URL for attempt number `attempt`: the peer's URLs in turn.
    pub(crate) fn url(&self, attempt: u64) -> String {
        let urls = self.urls.borrow();
        assert!(!urls.is_empty(), "peer {:x} has no URLs", self.id);
        urls[(attempt % urls.len() as u64) as usize].clone()
    }
}

/// Resolves when the peer is stopped (flag set or its handle dropped).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Exponential back-off from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], no jitter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff { next: BACKOFF_MIN }
    }

    /// The delay to wait now; doubles the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        assert!(
            delay >= BACKOFF_MIN && delay <= BACKOFF_MAX,
            "delay {delay:?}"
        );
        delay
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// How a connected stream ended.
enum StreamEnd {
    Stopped,
    UrlsChanged,
    /// Broken, closed by the peer, or rejected; the text says which.
    Failed(String),
    Rejected(tonic::Status),
    /// The peer says this member was removed from the cluster.
    Removed,
}

/// The peer's stream task (see the module diagram).
pub(crate) async fn run_stream(
    mut ctx: PeerCtx,
    mut queue: mpsc::Receiver<Message>,
    status: watch::Sender<PeerStatus>,
) {
    let peer = format!("{:x}", ctx.id);
    let mut backoff = Backoff::new();
    let mut attempt: u64 = 0;
    loop {
        ctx.urls.mark_unchanged();
        let url = ctx.url(attempt);
        status.send_replace(PeerStatus::Connecting);
        let connected = tokio::select! {
            biased;
            _ = stopped(&mut ctx.stop) => return,
            c = ctx.dialer.connect(&url) => c,
        };
        match connected {
            Err(e) => {
                tracing::debug!(%peer, %url, error = %net::error_chain(&e), "cannot connect to peer");
            }
            Ok(client) => {
                status.send_replace(PeerStatus::Connected);
                tracing::info!(%peer, %url, "peer stream connected");
                let local = format!("{:x}", ctx.local_id);
                let active = crate::metrics::METRICS
                    .active_peers
                    .with_label_values(&[&local, &peer]);
                active.set(1);
                let opened = tokio::time::Instant::now();
                let end = forward(&mut ctx, client, &mut queue).await;
                active.set(0);
                if !matches!(end, StreamEnd::Stopped) {
                    crate::metrics::METRICS
                        .disconnected_peers
                        .with_label_values(&[&local, &peer])
                        .inc();
                }
                if opened.elapsed() >= STREAM_HEALTHY_AFTER
                    && !matches!(end, StreamEnd::Rejected(_) | StreamEnd::Removed)
                {
                    backoff.reset();
                }
                match end {
                    StreamEnd::Stopped => return,
                    StreamEnd::UrlsChanged => {
                        attempt = 0;
                        continue;
                    }
                    StreamEnd::Failed(why) => {
                        tracing::warn!(%peer, %url, %why, "peer stream ended");
                    }
                    StreamEnd::Rejected(s) => {
                        tracing::error!(%peer, %url, status = %s, "peer rejected the stream");
                    }
                    StreamEnd::Removed => {
                        tracing::error!(%peer, "{}", super::REMOVED_MESSAGE);
                        let _ = ctx.inbound.try_send(Inbound::Removed);
                    }
                }
            }
        }
        // Status first: whoever sees the report sees the peer as down.
        status.send_replace(PeerStatus::BackingOff);
        ctx.report_unreachable();
        attempt += 1;
        match back_off(&mut ctx, &mut queue, backoff.next_delay()).await {
            BackoffEnd::Stopped => return,
            BackoffEnd::UrlsChanged => attempt = 0,
            BackoffEnd::Elapsed => {}
        }
    }
}

enum BackoffEnd {
    Stopped,
    UrlsChanged,
    Elapsed,
}

/// Waits `delay`, dropping queued messages and reporting `Unreachable` once
/// if any were dropped (raft only needs to know, not how many).
async fn back_off(
    ctx: &mut PeerCtx,
    queue: &mut mpsc::Receiver<Message>,
    delay: Duration,
) -> BackoffEnd {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    let mut dropped: u64 = 0;
    let end = loop {
        tokio::select! {
            biased;
            _ = stopped(&mut ctx.stop) => break BackoffEnd::Stopped,
            changed = ctx.urls.changed() => break match changed {
                Ok(()) => BackoffEnd::UrlsChanged,
                Err(_) => BackoffEnd::Stopped,
            },
            _ = &mut sleep => break BackoffEnd::Elapsed,
            m = queue.recv() => match m {
                Some(_) => {
                    if dropped == 0 {
                        ctx.report_unreachable();
                    }
                    dropped += 1;
                }
                None => break BackoffEnd::Stopped,
            },
        }
    };
    if dropped > 0 {
        tracing::debug!(peer = %format_args!("{:x}", ctx.id), dropped, "dropped messages while disconnected");
    }
    end
}

/// Opens `Peer.Stream` on `client` and forwards the queue into it until the
/// stream ends, the peer is stopped or its URLs change.
async fn forward(
    ctx: &mut PeerCtx,
    mut client: crate::proto::concordpb::peer_client::PeerClient<tonic::transport::Channel>,
    queue: &mut mpsc::Receiver<Message>,
) -> StreamEnd {
    let (tx, rx) = mpsc::channel::<RaftMessage>(STREAM_BUFFER_MESSAGES);
    let request = net::request(ReceiverStream::new(rx), ctx.cluster_id, ctx.local_id);
    let call = client.stream(request);
    tokio::pin!(call);
    // The next message, taken from the queue, waiting for room in `tx`.
    let mut pending: Option<RaftMessage> = None;
    let mut last_sent = tokio::time::Instant::now();
    // Created once, not per message: a select re-creating them registers
    // two watch waiters and a timer for every message it forwards.
    let sent_bytes = crate::metrics::METRICS
        .peer_sent_bytes
        .with_label_values(&[&format!("{:x}", ctx.id)]);
    let PeerCtx { stop, urls, .. } = ctx;
    let stop = stopped(stop);
    let urls = urls.changed();
    // Fires at most once per idle interval; a stream that sent since only
    // moves it on.
    let ping = tokio::time::sleep(STREAM_IDLE_PING);
    tokio::pin!(stop, urls, ping);
    loop {
        tokio::select! {
            biased;
            _ = &mut stop => return StreamEnd::Stopped,
            changed = &mut urls => return match changed {
                Ok(()) => StreamEnd::UrlsChanged,
                Err(_) => StreamEnd::Stopped,
            },
            result = &mut call => return call_end(result),
            permit = tx.reserve(), if pending.is_some() => match (permit, pending.take()) {
                (Ok(permit), Some(m)) => {
                    sent_bytes.inc_by(prost::Message::encoded_len(&m) as u64);
                    permit.send(m);
                    last_sent = tokio::time::Instant::now();
                }
                // gRPC dropped the request stream: the call is ending.
                _ => return call_end(call.await),
            },
            m = queue.recv(), if pending.is_none() => match m {
                Some(m) => pending = Some(codec::encode(m)),
                None => return StreamEnd::Stopped,
            },
            _ = &mut ping, if pending.is_none() => {
                let due = last_sent + STREAM_IDLE_PING;
                if due <= tokio::time::Instant::now() {
                    pending = Some(keepalive());
                    ping.as_mut().reset(tokio::time::Instant::now() + STREAM_IDLE_PING);
                } else {
                    ping.as_mut().reset(due);
                }
            }
        }
    }
}

/// The stream's keep-alive: a message of type `MSG_UNSPECIFIED` with no
/// field set, which the server skips (`is_keepalive`).
pub(crate) fn keepalive() -> RaftMessage {
    RaftMessage::default()
}

/// Whether `m` is the stream keep-alive rather than a raft message.
pub(crate) fn is_keepalive(m: &RaftMessage) -> bool {
    *m == RaftMessage::default()
}

fn call_end(
    result: Result<tonic::Response<crate::proto::concordpb::StreamAck>, tonic::Status>,
) -> StreamEnd {
    match result {
        Ok(_) => StreamEnd::Failed("closed by the peer".to_string()),
        Err(s) if s.code() == tonic::Code::PermissionDenied => StreamEnd::Rejected(s),
        Err(s)
            if s.code() == tonic::Code::FailedPrecondition
                && s.message() == super::REMOVED_MESSAGE =>
        {
            StreamEnd::Removed
        }
        Err(s) => StreamEnd::Failed(s.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::new();
        let got: Vec<u64> = (0..9).map(|_| b.next_delay().as_millis() as u64).collect();
        let want = [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000];
        assert_eq!(got, want, "got {got:?}, want {want:?}");
        b.reset();
        assert_eq!(b.next_delay(), BACKOFF_MIN);
    }
}
