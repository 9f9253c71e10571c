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
//!   backend, with restarts, checkpoints and physical compaction steps in
//!   between; the store's debug assertions and a few properties checked
//!   here (revisions never go back, a write takes at most one revision,
//!   reads at the current revision agree after a restart) turn into crashes.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use prost::Message;

use crate::api::check::{check_delete, check_put, check_range, check_txn, is_txn_read_only};
use crate::config::Config;
use crate::mvcc::Store;
use crate::proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, PutRequest, RangeRequest, TxnRequest,
};
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
        // either.
        assert!(cfg.heartbeat_interval_ms > 0);
        assert!(cfg.election_timeout_ms >= 5 * cfg.heartbeat_interval_ms);
        // The member IDs and the initial cluster are computed from it.
        let _ = crate::cluster::Membership::bootstrap(&crate::node::bootstrap_of(&cfg));
    }
}

/// One step of [`kv_requests`].
#[derive(Debug, Arbitrary)]
enum KvStep {
    /// A request: which kind, and its protobuf encoding.
    Request { kind: u8, bytes: Vec<u8> },
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
    let backend: Arc<dyn Backend> = Arc::new(MemBackend::new());
    let mut store = Store::open(backend.clone()).expect("a new store opens");
    // Leases with an even ID exist.
    let lease_exists = |id: i64| id % 2 == 0;
    for _ in 0..64 {
        let Ok(step) = KvStep::arbitrary(&mut u) else {
            break;
        };
        let before = store.current_revision();
        match step {
            KvStep::Request { kind, bytes } => {
                let bytes = bytes.as_slice();
                // A group of one request, committed whether it succeeded or
                // not, as the applier commits its groups. Errors are fine.
                let mut w = store.writer(&lease_exists);
                match kind % 5 {
                    0 => {
                        if let Ok(r) = RangeRequest::decode(bytes) {
                            if check_range(&r).is_ok() {
                                let _ = store.range(&r);
                            }
                        }
                    }
                    1 => {
                        if let Ok(r) = PutRequest::decode(bytes) {
                            if check_put(&r).is_ok() {
                                let _ = w.put(&r);
                            }
                        }
                    }
                    2 => {
                        if let Ok(r) = DeleteRangeRequest::decode(bytes) {
                            if check_delete(&r).is_ok() {
                                let _ = w.delete_range(&r);
                            }
                        }
                    }
                    3 => {
                        if let Ok(r) = TxnRequest::decode(bytes) {
                            if check_txn(&r, 128).is_ok() {
                                if is_txn_read_only(&r) {
                                    let _ = store.read_txn(&r);
                                } else {
                                    let _ = w.txn(&r);
                                }
                            }
                        }
                    }
                    _ => {
                        if let Ok(r) = CompactionRequest::decode(bytes) {
                            let _ = w.compact(r.revision);
                        }
                    }
                }
                let rev = w.revision();
                assert!(
                    rev == before || rev == before + 1,
                    "one request took revisions {before}..{rev}"
                );
                w.commit().expect("the in-memory backend does not fail");
            }
            KvStep::Restart => {
                let all = everything(&store);
                drop(store);
                store = Store::open(backend.clone()).expect("the store reopens");
                assert_eq!(store.current_revision(), before, "revision after a restart");
                assert_eq!(everything(&store), all, "live keys after a restart");
            }
            KvStep::Checkpoint => store.checkpoint().expect("checkpoint"),
            KvStep::CompactDisk { limit } => {
                store
                    .compact_disk_step(usize::from(limit) + 1)
                    .expect("compaction step");
            }
        }
        assert!(store.current_revision() >= before, "the revision went back");
    }
}

/// Every live key and value at the current revision.
fn everything(store: &Store) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let all = RangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    let (result, _) = store
        .range(&all)
        .expect("a full range at the current revision");
    result
        .kvs
        .into_iter()
        .map(|kv| (kv.key, kv.value, kv.mod_revision))
        .collect()
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
                "corpus input {} fails\nreplay: cargo fuzz run -s none {target} {}",
                path.display(),
                path.display()
            );
            n += 1;
        }
        assert!(n >= 10, "expected a seed corpus, found {n} inputs");
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
