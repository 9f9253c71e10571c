//! `GET /metrics`: every metric in Prometheus' text format. The gauges of
//! state (leader, sizes, keys, watchers, file descriptors) are read from
//! the member at the scrape; counters and histograms are counted where the
//! work happens.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::member::Handle;
use crate::metrics::{self, METRICS};

pub async fn metrics(State(member): State<Handle>) -> Response {
    let p = member.progress();
    let me = member.member_id();
    let m = &*METRICS;
    m.has_leader.set(i64::from(p.leader != 0));
    m.is_leader.set(i64::from(p.leader != 0 && p.leader == me));
    m.proposals_committed.set(p.committed_index as i64);
    m.proposals_applied.set(p.applied_index as i64);
    m.server_version
        .with_label_values(&[crate::api::SERVER_VERSION])
        .set(1);
    m.cluster_version
        .with_label_values(&[crate::api::CLUSTER_VERSION])
        .set(1);
    let learner = member
        .membership()
        .members
        .iter()
        .any(|x| x.id == me && x.is_learner);
    m.is_learner.set(i64::from(learner));
    m.server_id.with_label_values(&[&format!("{me:x}")]).set(1);
    let store = member.store();
    let size = store.backend().size_bytes() as i64;
    m.db_total_size.set(size);
    m.db_total_size_in_use.set(size);
    m.keys_total.set(store.live_keys() as i64);
    m.current_revision.set(store.current_revision());
    m.compact_revision.set(store.compact_revision());
    m.watcher_total
        .set(member.watch_hub().watcher_count() as i64);
    m.watch_stream_total
        .set(member.watch_hub().stream_count() as i64);
    if let Some((used, limit)) = metrics::file_descriptors() {
        m.os_fd_used.set(used);
        m.os_fd_limit.set(limit);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics::render(),
    )
        .into_response()
}
