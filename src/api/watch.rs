//! The Watch service: one bidirectional stream carries many watchers.
//!
//! The receive side turns create / cancel / progress requests into hub
//! calls; the send side turns what the hub put on the stream's sink into
//! etcd's responses (filling `prev_kv`, splitting fragments, headers). A
//! `Created` response is on the sink before the watcher may receive events.

use std::pin::Pin;
use std::sync::Arc;

use super::caller::Credentials;
use futures::{Stream, StreamExt};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::caller::ReadCheck;
use super::header_at;
use crate::member::Handle;
use crate::proto::etcdserverpb::watch_server::Watch;
use crate::proto::etcdserverpb::{
    watch_request::RequestUnion, RangeRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::proto::mvccpb::{event::EventType, Event};
use crate::watch::{Outgoing, StreamGuard, WatchHub, STREAM_BUFFER_RESPONSES_MAX};

pub struct WatchService {
    member: Handle,
}

impl WatchService {
    pub fn new(member: Handle) -> Self {
        Self { member }
    }

    /// One watch stream over any stream of requests (gRPC's, or the JSON
    /// gateway's): the responses, until the client goes.
    /// `cred` is the stream's metadata: its token names the sender whose
    /// read permission each watch needs when it is created.
    pub fn open<S>(&self, cred: Credentials, inbound: S) -> ResponseStream
    where
        S: Stream<Item = Result<WatchRequest, Status>> + Unpin + Send + 'static,
    {
        let hub = self.member.watch_hub().clone();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER_RESPONSES_MAX);
        let stream = hub.open_stream(tx.clone());
        let sender = Sender {
            member: self.member.clone(),
            cred,
        };
        tokio::spawn(receive(inbound, hub.clone(), stream, tx, sender));
        let guard = StreamGuard::new(hub, stream);
        let member = self.member.clone();
        let out =
            futures::stream::unfold((rx, guard, member), |(mut rx, guard, member)| async move {
                let item = rx.recv().await?;
                let responses = respond(&member, item);
                Some((
                    futures::stream::iter(responses.into_iter().map(Ok)),
                    (rx, guard, member),
                ))
            })
            .flatten();
        Box::pin(out)
    }
}

pub type ResponseStream = Pin<Box<dyn Stream<Item = Result<WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watch for WatchService {
    type WatchStream = ResponseStream;

    async fn watch(
        &self,
        request: Request<Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (cred, inbound) = Credentials::split(request);
        Ok(Response::new(self.open(cred, inbound)))
    }
}

/// Who opened a watch stream.
struct Sender {
    member: Handle,
    cred: Credentials,
}

impl Sender {
    /// Read permission on the watched range, checked once, when a watch
    /// is created (as etcd: later changes do not stop a watch).
    async fn may_watch(&self, c: &WatchCreateRequest) -> Result<(), Status> {
        if !self.member.auth().enabled() {
            return Ok(());
        }
        let check = ReadCheck::new(&self.member, &self.cred).await?;
        // etcd reads an empty key as "\0".
        let key: &[u8] = if c.key.is_empty() { b"\0" } else { &c.key };
        check.read(key, &c.range_end)
    }
}

/// A refused watch's cancel reason: the whole gRPC error text, as etcd
/// sends it (clientv3 compares it to decide whether to authenticate again
/// and retry).
fn refusal(status: &Status) -> &'static str {
    use super::error::{AUTH_OLD_REVISION, INVALID_AUTH_TOKEN, USER_EMPTY};
    if status.message() == INVALID_AUTH_TOKEN.message {
        "rpc error: code = Unauthenticated desc = etcdserver: invalid auth token"
    } else if status.message() == USER_EMPTY.message {
        "rpc error: code = InvalidArgument desc = etcdserver: user name is empty"
    } else if status.message() == AUTH_OLD_REVISION.message {
        "rpc error: code = InvalidArgument desc = etcdserver: revision of auth store is old"
    } else {
        "rpc error: code = PermissionDenied desc = etcdserver: permission denied"
    }
}

/// The receive side: runs until the client closes its side (the watchers
/// stay, as in etcd) or the stream breaks.
async fn receive(
    mut inbound: impl Stream<Item = Result<WatchRequest, Status>> + Unpin,
    hub: Arc<WatchHub>,
    stream: u64,
    tx: mpsc::Sender<Outgoing>,
    sender: Sender,
) {
    while let Some(Ok(req)) = inbound.next().await {
        let sent = match req.request_union {
            Some(RequestUnion::CreateRequest(c)) => match sender.may_watch(&c).await {
                Err(e) => {
                    tx.send(Outgoing::Refused {
                        revision: sender.member.store().current_revision(),
                        reason: refusal(&e),
                    })
                    .await
                }
                Ok(()) => match hub.create(stream, &c) {
                    Ok((watch_id, revision)) => {
                        let ok = tx.send(Outgoing::Created { watch_id, revision }).await;
                        hub.announce(stream, watch_id);
                        ok
                    }
                    Err((e, revision)) => {
                        tx.send(Outgoing::Refused {
                            revision,
                            reason: e.reason(),
                        })
                        .await
                    }
                },
            },
            Some(RequestUnion::CancelRequest(c)) => match hub.cancel(stream, c.watch_id) {
                Some(revision) => {
                    tx.send(Outgoing::Canceled {
                        watch_id: c.watch_id,
                        revision,
                    })
                    .await
                }
                None => Ok(()),
            },
            Some(RequestUnion::ProgressRequest(_)) => {
                hub.request_progress(stream);
                Ok(())
            }
            None => Ok(()),
        };
        if sent.is_err() {
            break;
        }
    }
}

/// The responses for one item of the sink.
fn respond(member: &Handle, item: Outgoing) -> Vec<WatchResponse> {
    let base = |watch_id: i64, revision: i64| WatchResponse {
        header: header_at(member, revision),
        watch_id,
        ..WatchResponse::default()
    };
    match item {
        Outgoing::Created { watch_id, revision } => vec![WatchResponse {
            created: true,
            ..base(watch_id, revision)
        }],
        Outgoing::Canceled { watch_id, revision } => vec![WatchResponse {
            canceled: true,
            ..base(watch_id, revision)
        }],
        Outgoing::Progress { watch_id, revision } => vec![base(watch_id, revision)],
        Outgoing::Refused { revision, reason } => vec![WatchResponse {
            created: true,
            canceled: true,
            cancel_reason: reason.to_string(),
            ..base(-1, revision)
        }],
        Outgoing::Compacted {
            watch_id,
            compact_revision,
        } => {
            let mut r = WatchResponse {
                canceled: true,
                compact_revision,
                ..base(watch_id, 1)
            };
            if let Some(h) = r.header.as_mut() {
                h.revision = 0; // as etcd: no revision on a compacted cancel
            }
            vec![r]
        }
        Outgoing::Events {
            watch_id,
            revision,
            mut events,
            prev_kv,
            fragment,
        } => {
            if prev_kv {
                fill_prev_kv(member, &mut events);
            }
            crate::metrics::METRICS
                .events_total
                .inc_by(events.len() as u64);
            let limit = super::max_recv_bytes(member.config().max_request_bytes);
            let resp = WatchResponse {
                events,
                ..base(watch_id, revision)
            };
            if fragment {
                fragments(resp, limit)
            } else {
                vec![resp]
            }
        }
    }
}

/// etcd: a non-creation event carries the key as it was at mod_revision-1,
/// unless that was compacted.
fn fill_prev_kv(member: &Handle, events: &mut [Event]) {
    for ev in events {
        let Some(kv) = &ev.kv else { continue };
        let is_create = ev.r#type == EventType::Put as i32 && kv.create_revision == kv.mod_revision;
        if is_create {
            continue;
        }
        let req = RangeRequest {
            key: kv.key.clone(),
            revision: kv.mod_revision - 1,
            ..RangeRequest::default()
        };
        if let Ok((res, _)) = member.store().range(&req) {
            ev.prev_kv = res.kvs.into_iter().next();
        }
    }
}

/// etcd's fragmentation: a response of at least `limit` bytes with two or
/// more events is split into pieces of about `limit` bytes; every piece but
/// the last has `fragment=true`. An oversized single event goes alone.
fn fragments(resp: WatchResponse, limit: usize) -> Vec<WatchResponse> {
    if resp.events.len() < 2 || resp.encoded_len() < limit {
        return vec![resp];
    }
    let mut pieces = Vec::new();
    let mut current = WatchResponse {
        events: Vec::new(),
        ..resp.clone()
    };
    let mut size = current.encoded_len();
    for ev in resp.events {
        let ev_size = ev.encoded_len() + 4;
        if !current.events.is_empty() && size + ev_size > limit {
            let next = WatchResponse {
                events: Vec::new(),
                ..current.clone()
            };
            pieces.push(std::mem::replace(&mut current, next));
            size = current.encoded_len();
        }
        size += ev_size;
        current.events.push(ev);
    }
    pieces.push(current);
    let last = pieces.len() - 1;
    for (i, p) in pieces.iter_mut().enumerate() {
        p.fragment = i != last;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::mvccpb::KeyValue;

    fn ev(key: &str, value_bytes: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_bytes],
                ..KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn small_or_single_event_responses_are_not_fragmented() {
        let one = WatchResponse {
            events: vec![ev("a", 5000)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(one.clone(), 100), vec![one]);
        let small = WatchResponse {
            events: vec![ev("a", 1), ev("b", 1)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(small.clone(), 1000), vec![small]);
    }

    #[test]
    fn large_responses_are_split_in_order_with_fragment_flags() {
        let events: Vec<Event> = (0..10).map(|i| ev(&format!("k{i}"), 400)).collect();
        let resp = WatchResponse {
            watch_id: 7,
            events: events.clone(),
            ..WatchResponse::default()
        };
        let pieces = fragments(resp, 1000);
        assert!(pieces.len() >= 4, "got {} pieces", pieces.len());
        let flags: Vec<bool> = pieces.iter().map(|p| p.fragment).collect();
        assert!(flags[..flags.len() - 1].iter().all(|f| *f));
        assert!(!flags[flags.len() - 1]);
        assert!(pieces.iter().all(|p| p.watch_id == 7));
        let joined: Vec<Event> = pieces.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, events);
    }
}
