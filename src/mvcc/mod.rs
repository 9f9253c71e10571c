//! mvcc: the multi-version revision store.
//!
//! Every mutating request that changes something creates one new main
//! revision; its changes take sub revisions 0, 1, 2, ... Previous versions
//! stay readable (and, later, watchable) until compaction.
//!
//! Layers, leaves first:
//! - `revision`: `(main, sub)` and etcd's 17-byte record key;
//! - `key_index`: one key's generations; `index`: the ordered in-memory map;
//! - `disk`: byte layouts of the history, live-key and meta partitions;
//! - `store`: range / put / delete / txn / compact / hash over a
//!   [`crate::storage::Backend`].
//!
//! What a restart reads: the meta values and one small summary per *live*
//! key (`KeyLive`). It never reads values or history, so restart time does
//! not grow with the length of history or with value bytes. Reads below the
//! restart point (time travel) are answered from the on-disk key history.

pub mod disk;
pub mod index;
pub mod key_index;
pub mod revision;
pub mod store;

#[cfg(test)]
mod model_tests;

pub use index::Span;
pub use revision::Revision;
pub use store::{Change, Committed, HashKv, RangeResult, Store, Writer};

use crate::storage::StorageError;

/// Longest user key accepted. The key history partition stores the escaped
/// key (up to twice as long) plus 18 bytes, and fjall refuses keys of 64 KiB.
pub const USER_KEY_BYTES_MAX: usize = 32 * 1024 - 32;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MvccError {
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    #[error("mvcc: required revision is a future revision")]
    FutureRev,
    /// `ignore_value` / `ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    #[error("lease not found")]
    LeaseNotFound,
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge { len: usize, max: usize },
    #[error("corrupt mvcc data: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub type Result<T> = std::result::Result<T, MvccError>;
