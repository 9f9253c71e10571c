//! Fuzz entry points (`fuzz/fuzz_targets/*` call these; the committed corpus
//! of each is replayed by this module's tests, so `cargo test` catches a
//! regression without cargo-fuzz). Each takes the fuzzer's bytes and panics
//! only on a bug: bad input must come back as a typed error.
//!
//! - [`config_parse`]: command-line flags, `ETCD_*` variables and a YAML
//!   config file, as the daemon reads them.
//! - [`kv_requests`]: protobuf-encoded etcd KV requests (Range, Put,
//!   DeleteRange, Txn, Compaction) decoded, validated as the gRPC layer
//!   validates them, and run against a revision store on the in-memory
//!   backend in groups of up to 8 (one commit each, as the applier commits
//!   a group of raft entries), with restarts, checkpoints and physical compaction steps in
//!   between; the store's debug assertions and a few properties checked
//!   here (revisions never go back, a write takes at most one revision,
//!   reads at the current revision agree after a restart) turn into crashes.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use prost::Message;

use crate::api::check::{check_delete, check_put, check_range, check_txn, is_txn_read_only};
use crate::api::error::EtcdError;
use crate::config::Config;
use crate::mvcc::{Store, Writer};
use crate::proto::etcdserverpb::{CompactionRequest, RangeRequest, TxnRequest};
use crate::storage::mem::MemBackend;
use crate::storage::Backend;

#[derive(Debug, Arbitrary)]
struct ConfigInput {
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// The config file's text (read for any `--config-file` path).
    file: String,
    /// Name the file with `ETCD_CONFIG_FILE` as well.
    file_from_env: bool,
}

/// Parses flags, environment and config file; any result but a panic is
/// fine.
pub fn config_parse(data: &[u8]) {
    let Ok(input) = ConfigInput::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let env = |k: &str| {
        if input.file_from_env && k == "ETCD_CONFIG_FILE" {
            return Some("etcd.conf.yml".to_string());
        }
        input
            .env
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.clone())
    };
    let file = input.file.clone();
    if let Ok(cfg) = Config::from_sources(&input.args, &env, &move |_| Ok(file.clone())) {
        // What the daemon derives from a valid configuration must not fail
        // either: the member's timings, the gRPC size limit, the lease
        // minimum.
        let _ = crate::node::member_config(&cfg);
        let _ = crate::api::max_recv_bytes(cfg.max_request_bytes);
        let _ =
            crate::lease::Lessor::min_ttl_secs(cfg.heartbeat_interval_ms, cfg.election_timeout_ms);
        // The member IDs and the initial cluster are computed from it.
        let _ = crate::cluster::Membership::bootstrap(&crate::node::bootstrap_of(&cfg));
    }
}

/// One step of [`kv_requests`].
#[derive(Debug, Arbitrary)]
enum KvStep {
    /// A group of requests (up to 8): which kind, and its protobuf
    /// encoding.
    Group(Vec<(u8, Vec<u8>)>),
    /// Close the store and open it again on the same backend.
    Restart,
    /// Write the in-memory history and live-key changes to disk.
    Checkpoint,
    /// Delete up to `limit` compacted records on disk.
    CompactDisk { limit: u8 },
}

/// Decodes, validates and runs KV requests on a store; see the module doc.
pub fn kv_requests(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let steps = std::iter::from_fn(|| KvStep::arbitrary(&mut u).ok()).take(64);
    run_kv(steps, false);
}

/// Runs `steps` on a new store. Every step is made durable (fsync) as the
/// member makes a group durable before it answers, and a restart is a
/// crash: what was not made durable is lost. `skip_fsync` plants a bug for
/// the tests: groups that end at an odd revision are not made durable.
fn run_kv(steps: impl Iterator<Item = KvStep>, skip_fsync: bool) {
    let mem = Arc::new(MemBackend::new());
    let backend: Arc<dyn Backend> = mem.clone();
    let mut store = Store::open(backend.clone()).expect("a new store opens");
    // Leases with an even ID exist.
    let lease_exists = |id: i64| id % 2 == 0;
    for step in steps {
        let before = store.current_revision();
        match step {
            KvStep::Group(requests) => {
                // One group, committed whether its requests succeeded or
                // not, as the applier commits its groups. Errors are fine.
                let mut w = store.writer(&lease_exists);
                for (kind, bytes) in requests.iter().take(8) {
                    let from = w.revision();
                    run_request(&store, &mut w, *kind, bytes);
                    let to = w.revision();
                    assert!(
                        to == from || to == from + 1,
                        "one request took revisions {from}..{to}"
                    );
                }
                let committed = w.commit().expect("the in-memory backend does not fail");
                if !(skip_fsync && committed.revision % 2 == 1) {
                    backend.persist().expect("fsync");
                }
            }
            KvStep::Restart => {
                let all = everything(&store);
                drop(store);
                mem.crash();
                store = Store::open(backend.clone()).expect("the store reopens");
                assert_eq!(store.current_revision(), before, "revision after a restart");
                assert_eq!(everything(&store), all, "live keys after a restart");
            }
            KvStep::Checkpoint => store.checkpoint().expect("checkpoint"),
            KvStep::CompactDisk { limit } => {
                store
                    .compact_disk_step(usize::from(limit) + 1)
                    .expect("compaction step");
                backend.persist().expect("fsync");
            }
        }
        assert!(store.current_revision() >= before, "the revision went back");
    }
}

/// Decodes one request of `kind` and, if the gRPC layer would accept it,
/// runs it (writes in `w`'s group, reads on the published store).
fn run_request(store: &Store, w: &mut Writer<'_>, kind: u8, bytes: &[u8]) {
    match kind % 5 {
        0 => {
            if let Some(r) = valid(bytes, check_range) {
                let _ = store.range(&r);
            }
        }
        1 => {
            if let Some(r) = valid(bytes, check_put) {
                let _ = w.put(&r);
            }
        }
        2 => {
            if let Some(r) = valid(bytes, check_delete) {
                let _ = w.delete_range(&r);
            }
        }
        3 => {
            if let Some(r) = valid(bytes, |r: &TxnRequest| check_txn(r, 128)) {
                if is_txn_read_only(&r) {
                    let _ = store.read_txn(&r);
                } else {
                    let _ = w.txn(&r);
                }
            }
        }
        _ => {
            if let Some(r) = valid(bytes, |_: &CompactionRequest| Ok(())) {
                let _ = w.compact(r.revision);
            }
        }
    }
}

/// The request `bytes` encode, if they decode and `check` accepts it.
fn valid<T: Message + Default>(
    bytes: &[u8],
    check: impl Fn(&T) -> Result<(), EtcdError>,
) -> Option<T> {
    T::decode(bytes).ok().filter(|r| check(r).is_ok())
}

/// Every live key at the current revision, and the compacted revision.
fn everything(store: &Store) -> (Vec<crate::proto::mvccpb::KeyValue>, i64) {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let (result, _) = store
        .range(&all)
        .expect("a full range at the current revision");
    (result.kvs, store.compact_revision())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Runs every input of `fuzz/corpus/<target>` through `run`.
    fn replay(target: &str, run: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read corpus {}: {e}", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus input");
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(
                result.is_ok(),
                "corpus input {} fails\nreplay: cargo fuzz run -s none -a {target} {}",
                path.display(),
                path.display()
            );
            n += 1;
        }
        assert!(n >= 10, "expected a seed corpus, found {n} inputs");
    }

    /// The harness catches a lost write: with the fsync of the second of
    /// two puts skipped (planted), the restart loses that put.
    #[test]
    fn kv_harness_catches_writes_lost_at_a_restart() {
        use super::{run_kv, KvStep};
        use crate::proto::etcdserverpb::PutRequest;
        use prost::Message;
        let steps = || {
            let put = PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            let put = || KvStep::Group(vec![(1, put.encode_to_vec())]);
            vec![put(), put(), KvStep::Restart].into_iter()
        };
        run_kv(steps(), false);
        let planted = std::panic::catch_unwind(|| run_kv(steps(), true));
        let msg = planted.expect_err("a lost write passed the harness");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(msg.contains("revision after a restart"), "{msg}");
    }

    #[test]
    fn config_parse_corpus_replays_clean() {
        replay("config_parse", super::config_parse);
    }

    #[test]
    fn kv_requests_corpus_replays_clean() {
        replay("kv_requests", super::kv_requests);
    }
}
