//! Byte layouts of the MVCC partitions (everything except the revision
//! records, whose keys live in `revision.rs` and values are `mvccpb.KeyValue`).
//!
//! - `KeyHistory`: `escape(user key) 0x00 0x00 main(8 BE) sub(8 BE)` -> `[flag]`
//!   (0 = put, 1 = tombstone). The escape (`0x00` -> `0x00 0xff`) keeps byte
//!   order equal to user-key order and makes each key's entries contiguous and
//!   revision-ordered, so it is the persistent form of every `KeyIndex`.
//! - `KeyLive`: `user key` -> created(main, sub) modified(main, sub) version
//!   lease, six big-endian i64: the summary a restart rebuilds the index from.
//! - `Meta`: named i64 values (current revision, compaction marks).

use super::revision::Revision;
use super::MvccError;

pub const META_REVISION: &[u8] = b"mvcc/revision";
pub const META_COMPACT_SCHEDULED: &[u8] = b"mvcc/compact_scheduled";
pub const META_COMPACT_FINISHED: &[u8] = b"mvcc/compact_finished";
/// `KeyLive` holds every live key's state as of at least this revision and
/// `KeyHistory` every entry up to it; the records after it are replayed on
/// open (absent: a store of an older build, whose `KeyLive` is complete;
/// builds before the history was checkpointed wrote it per group, which
/// is complete too). The name is from when only `KeyLive` was.
pub const META_CHECKPOINT: &[u8] = b"mvcc/live_checkpoint";

const HIST_FLAG_PUT: u8 = 0;
const HIST_FLAG_TOMBSTONE: u8 = 1;

/// Appends the order-preserving escape of `key` and its terminator.
fn escape_into(out: &mut Vec<u8>, key: &[u8]) {
    for &b in key {
        out.push(b);
        if b == 0 {
            out.push(0xff);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// The first `KeyHistory` key of `user_key` (before any revision).
pub fn history_prefix(user_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(user_key.len() + 18);
    escape_into(&mut out, user_key);
    out
}

pub fn history_key(user_key: &[u8], rev: Revision) -> Vec<u8> {
    let mut out = history_prefix(user_key);
    out.extend_from_slice(&rev.main.to_be_bytes());
    out.extend_from_slice(&rev.sub.to_be_bytes());
    out
}

pub fn history_value(tombstone: bool) -> Vec<u8> {
    vec![if tombstone {
        HIST_FLAG_TOMBSTONE
    } else {
        HIST_FLAG_PUT
    }]
}

/// One decoded `KeyHistory` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    pub key: Vec<u8>,
    pub rev: Revision,
    pub tombstone: bool,
}

pub fn decode_history(k: &[u8], v: &[u8]) -> Result<HistoryEntry, MvccError> {
    let corrupt = |why: &str| MvccError::Corrupt(format!("key history entry {k:02x?}: {why}"));
    let mut key = Vec::with_capacity(k.len());
    let mut i = 0;
    loop {
        let Some(&b) = k.get(i) else {
            return Err(corrupt("no terminator"));
        };
        if b != 0 {
            key.push(b);
            i += 1;
            continue;
        }
        match k.get(i + 1) {
            Some(0xff) => {
                key.push(0);
                i += 2;
            }
            Some(0) => {
                i += 2;
                break;
            }
            _ => return Err(corrupt("bad escape")),
        }
    }
    let rest = &k[i..];
    if rest.len() != 16 {
        return Err(corrupt("bad revision length"));
    }
    let main = i64::from_be_bytes(rest[..8].try_into().map_err(|_| corrupt("main"))?);
    let sub = i64::from_be_bytes(rest[8..].try_into().map_err(|_| corrupt("sub"))?);
    let tombstone = match v {
        [HIST_FLAG_PUT] => false,
        [HIST_FLAG_TOMBSTONE] => true,
        _ => return Err(corrupt("bad flag")),
    };
    Ok(HistoryEntry {
        key,
        rev: Revision { main, sub },
        tombstone,
    })
}

/// Summary of a live key, persisted in `KeyLive`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveKey {
    pub created: Revision,
    pub modified: Revision,
    pub version: i64,
    pub lease: i64,
}

impl LiveKey {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(48);
        for x in [
            self.created.main,
            self.created.sub,
            self.modified.main,
            self.modified.sub,
            self.version,
            self.lease,
        ] {
            out.extend_from_slice(&x.to_be_bytes());
        }
        out
    }

    pub fn decode(v: &[u8]) -> Result<Self, MvccError> {
        if v.len() != 48 {
            return Err(MvccError::Corrupt(format!(
                "live key summary of {} bytes, want 48",
                v.len()
            )));
        }
        let x = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v[i * 8..i * 8 + 8]);
            i64::from_be_bytes(b)
        };
        Ok(Self {
            created: Revision::new(x(0), x(1)),
            modified: Revision::new(x(2), x(3)),
            version: x(4),
            lease: x(5),
        })
    }
}

pub fn encode_i64(x: i64) -> Vec<u8> {
    x.to_be_bytes().to_vec()
}

pub fn decode_i64(what: &str, v: &[u8]) -> Result<i64, MvccError> {
    let b: [u8; 8] = v
        .try_into()
        .map_err(|_| MvccError::Corrupt(format!("{what}: {} bytes, want 8", v.len())))?;
    Ok(i64::from_be_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_keys_sort_by_user_key_then_revision() {
        // Keys chosen to trip naive encodings: prefixes and zero bytes.
        let keys: [&[u8]; 6] = [b"", b"\0", b"\0\0", b"\0\x01", b"a", b"a\0"];
        let mut encoded = Vec::new();
        for k in keys {
            for main in [1i64, 2, 300] {
                encoded.push(history_key(k, Revision::new(main, 0)));
            }
        }
        let mut sorted = encoded.clone();
        sorted.sort();
        assert_eq!(
            sorted, encoded,
            "byte order must equal (user key, revision) order"
        );
        for (i, k) in keys.iter().enumerate() {
            let e = decode_history(&encoded[i * 3 + 1], &history_value(true)).unwrap();
            assert_eq!((e.key.as_slice(), e.rev.main, e.tombstone), (*k, 2, true));
        }
    }

    #[test]
    fn history_prefix_bounds_one_key() {
        let p = history_prefix(b"a");
        assert!(history_key(b"a", Revision::new(7, 1)).starts_with(&p));
        assert!(!history_key(b"a\0", Revision::new(7, 1)).starts_with(&p));
    }

    #[test]
    fn corrupt_entries_are_errors_not_panics() {
        for bad in [&b"a"[..], b"a\0\x05", b"a\0\0short"] {
            assert!(decode_history(bad, &[0]).is_err(), "{bad:?}");
        }
        assert!(decode_history(&history_key(b"a", Revision::new(1, 0)), &[9]).is_err());
        assert!(LiveKey::decode(&[0; 47]).is_err());
    }

    #[test]
    fn live_key_round_trip() {
        let l = LiveKey {
            created: Revision::new(3, 1),
            modified: Revision::new(9, 0),
            version: 4,
            lease: 0x1234,
        };
        assert_eq!(LiveKey::decode(&l.encode()).unwrap(), l);
    }
}
