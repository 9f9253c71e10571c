//! Revisions and their on-disk keys.
//!
//! A revision is `(main, sub)`: `main` counts mutating requests (one per put,
//! delete or whole txn that changed something), `sub` numbers the changes
//! inside one request. On disk a revision is etcd's 17-byte key:
//!
//! ```text
//! +-----------------+-----+-----------------+-----+
//! | main (8, BE)    | '_' | sub (8, BE)     | 't' |   't' only for tombstones
//! +-----------------+-----+-----------------+-----+
//! ```
//! Big-endian integers make byte order equal revision order, so a range scan
//! between two revisions yields every change in between.

use std::fmt;

/// Length of a revision key without the tombstone mark.
pub const REV_BYTES_LEN: usize = 17;
/// Length of a tombstone revision key.
pub const TOMBSTONE_REV_BYTES_LEN: usize = 18;
const TOMBSTONE_MARK: u8 = b't';

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    /// The 17-byte key of this revision.
    pub fn to_bytes(self) -> [u8; REV_BYTES_LEN] {
        let mut b = [0u8; REV_BYTES_LEN];
        b[..8].copy_from_slice(&self.main.to_be_bytes());
        b[8] = b'_';
        b[9..].copy_from_slice(&self.sub.to_be_bytes());
        b
    }

    /// The key of the record written at this revision: 17 bytes, or 18 with
    /// the tombstone mark.
    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut k = Vec::with_capacity(TOMBSTONE_REV_BYTES_LEN);
        k.extend_from_slice(&self.to_bytes());
        if tombstone {
            k.push(TOMBSTONE_MARK);
        }
        k
    }

    /// Parses a record key; returns the revision and whether it is a
    /// tombstone, or `None` for bytes that are not a revision key.
    pub fn from_key(b: &[u8]) -> Option<(Revision, bool)> {
        let tombstone = match b.len() {
            REV_BYTES_LEN => false,
            TOMBSTONE_REV_BYTES_LEN if b[17] == TOMBSTONE_MARK => true,
            _ => return None,
        };
        if b[8] != b'_' {
            return None;
        }
        let main = i64::from_be_bytes(b[..8].try_into().ok()?);
        let sub = i64::from_be_bytes(b[9..17].try_into().ok()?);
        Some((Revision { main, sub }, tombstone))
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.main, self.sub)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_order() {
        let cases = [
            Revision::new(0, 0),
            Revision::new(1, 0),
            Revision::new(1, 1),
            Revision::new(2, 0),
            Revision::new(255, 7),
            Revision::new(256, 0),
            Revision::new(i64::MAX, i64::MAX),
        ];
        for (i, r) in cases.iter().enumerate() {
            for t in [false, true] {
                let k = r.to_key(t);
                assert_eq!(Revision::from_key(&k), Some((*r, t)), "case #{i}");
            }
        }
        for w in cases.windows(2) {
            assert!(
                w[0].to_bytes() < w[1].to_bytes(),
                "{} < {} in bytes",
                w[0],
                w[1]
            );
            assert!(w[0] < w[1]);
        }
    }

    #[test]
    fn etcd_layout() {
        let k = Revision::new(5, 2).to_key(true);
        assert_eq!(
            k,
            [0, 0, 0, 0, 0, 0, 0, 5, b'_', 0, 0, 0, 0, 0, 0, 0, 2, b't']
        );
    }

    #[test]
    fn rejects_malformed_keys() {
        let mut bad = Revision::new(1, 1).to_key(false);
        bad[8] = b'-';
        assert_eq!(Revision::from_key(&bad), None);
        let mut bad_mark = Revision::new(1, 1).to_key(true);
        bad_mark[17] = b'x';
        assert_eq!(Revision::from_key(&bad_mark), None);
        assert_eq!(Revision::from_key(b"short"), None);
    }
}
