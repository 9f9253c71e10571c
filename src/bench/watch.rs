//! `concord bench watch`: watch fan-out. `--watchers` watchers on one key,
//! spread over `--streams` gRPC watch streams on `--conns` connections; one
//! writer puts the key `--puts` times; every watcher must receive every
//! revision, in order. Prints events/s from the first put until the last
//! watcher has the last event, and how many events are missing (must be 0).
//! With `--hold`, it creates the watchers, prints `watchers ready`, and
//! keeps them idle until killed (for memory measurements).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::{connect, Opts};
use crate::proto::etcdserverpb::kv_client::KvClient;
use crate::proto::etcdserverpb::watch_client::WatchClient;
use crate::proto::etcdserverpb::{
    watch_request::RequestUnion, PutRequest, WatchCreateRequest, WatchRequest,
};

const KEY: &[u8] = b"concord-bench-watch";

/// What one stream's reader saw: per watcher, (events, last revision, in order).
#[derive(Default)]
struct StreamResult {
    events: u64,
    out_of_order: u64,
}

pub async fn run(o: &Opts) -> Result<(), String> {
    let channels = connect(o).await?;
    let mut kv = KvClient::new(channels[0].clone());
    let start_rev = kv
        .put(PutRequest {
            key: KEY.to_vec(),
            value: b"start".to_vec(),
            ..Default::default()
        })
        .await
        .map_err(|e| format!("put: {e}"))?
        .into_inner()
        .header
        .map_or(0, |h| h.revision)
        + 1;
    let last_rev = start_rev + o.puts as i64 - 1;
    let per_stream = o.watchers.div_ceil(o.streams);
    let (ready_tx, mut ready_rx) = mpsc::channel::<()>(o.streams);
    let mut readers = Vec::new();
    let mut senders = Vec::new();
    let mut made = 0;
    for s in 0..o.streams {
        let n = per_stream.min(o.watchers - made);
        if n == 0 {
            break;
        }
        made += n;
        let (tx, rx) = mpsc::channel(n + 1);
        for _ in 0..n {
            let create = WatchCreateRequest {
                key: KEY.to_vec(),
                start_revision: start_rev,
                ..Default::default()
            };
            tx.send(WatchRequest {
                request_union: Some(RequestUnion::CreateRequest(create)),
            })
            .await
            .map_err(|_| "watch request channel closed".to_string())?;
        }
        let mut client = WatchClient::new(channels[s % channels.len()].clone())
            .max_decoding_message_size(usize::MAX);
        let mut stream = client
            .watch(ReceiverStream::new(rx))
            .await
            .map_err(|e| format!("watch: {e}"))?
            .into_inner();
        senders.push(tx); // keep the request side open
        let ready = ready_tx.clone();
        readers.push(tokio::spawn(async move {
            let mut created = 0;
            let mut last: std::collections::HashMap<i64, i64> = Default::default();
            let mut r = StreamResult::default();
            let mut done_watchers = 0;
            while let Some(Ok(resp)) = stream.next().await {
                if resp.created {
                    created += 1;
                    if created == n {
                        let _ = ready.send(()).await;
                    }
                    continue;
                }
                for ev in &resp.events {
                    let rev = ev.kv.as_ref().map_or(0, |kv| kv.mod_revision);
                    let prev = last.entry(resp.watch_id).or_insert(start_rev - 1);
                    if rev != *prev + 1 {
                        r.out_of_order += 1;
                    }
                    *prev = rev;
                    r.events += 1;
                    if rev == last_rev {
                        done_watchers += 1;
                    }
                }
                if done_watchers == n {
                    break;
                }
            }
            r
        }));
    }
    drop(ready_tx);
    for _ in 0..readers.len() {
        ready_rx
            .recv()
            .await
            .ok_or("a watch stream ended before its watchers were created")?;
    }
    if o.hold {
        println!(
            "watchers ready: {} on {} streams",
            o.watchers,
            readers.len()
        );
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
    let value = Arc::new(vec![b'v'; o.val_size]);
    let t0 = Instant::now();
    let writers = o.clients.max(1) as u64;
    let mut puts = Vec::new();
    for w in 0..writers {
        let mut kv = KvClient::new(channels[w as usize % channels.len()].clone());
        let (value, total) = (value.clone(), o.puts);
        puts.push(tokio::spawn(async move {
            // Writers take turns on one key so revisions stay consecutive
            // per watcher; with several writers they interleave freely.
            let mut i = w;
            while i < total {
                kv.put(PutRequest {
                    key: KEY.to_vec(),
                    value: value.to_vec(),
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("put: {e}"))?;
                i += writers;
            }
            Ok::<(), String>(())
        }));
    }
    for p in puts {
        p.await.map_err(|e| format!("writer: {e}"))??;
    }
    let put_secs = t0.elapsed().as_secs_f64();
    let mut events = 0;
    let mut out_of_order = 0;
    for r in readers {
        let r = tokio::time::timeout(Duration::from_secs(120), r)
            .await
            .map_err(|_| "watchers did not receive every event within 120 s".to_string())?
            .map_err(|e| format!("reader: {e}"))?;
        events += r.events;
        out_of_order += r.out_of_order;
    }
    let secs = t0.elapsed().as_secs_f64();
    let expected = o.watchers as u64 * o.puts;
    let missing = expected.saturating_sub(events);
    let eps = events as f64 / secs;
    if o.json {
        println!(
            "{{\"cmd\":\"watch\",\"watchers\":{},\"streams\":{},\"puts\":{},\"events\":{events},\"missing\":{missing},\"out_of_order\":{out_of_order},\"seconds\":{secs:.4},\"events_per_sec\":{eps:.1},\"puts_per_sec\":{:.1}}}",
            o.watchers,
            o.streams,
            o.puts,
            o.puts as f64 / put_secs
        );
    } else {
        println!(
            "Summary (watch, {} watchers, {} streams, {} puts):",
            o.watchers, o.streams, o.puts
        );
        println!("  Events:       {events} of {expected} ({missing} missing, {out_of_order} out of order)");
        println!("  Total:        {secs:.4} secs.");
        println!("  Events/sec:   {eps:.1}");
        println!("  Puts/sec:     {:.1}", o.puts as f64 / put_secs);
    }
    drop(senders);
    if missing > 0 || out_of_order > 0 {
        return Err(format!(
            "{missing} events missing, {out_of_order} out of order"
        ));
    }
    Ok(())
}
