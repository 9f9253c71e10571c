//! A user's merged key permissions, as etcd's range permission cache: the
//! union of the intervals of every role the user has, one set for read and
//! one for write, checked by binary search.
//!
//! Semantics (etcd's `adt` affine intervals): a permission with an empty
//! range end is the single key; a range end of `"\0"` means every key from
//! `key` on; otherwise it is `[key, range_end)`. A request for a single key
//! is permitted when some interval holds the key; a request for a range
//! when the union covers the whole range.

use crate::proto::authpb::{permission::Type as PermType, Permission, Role};

/// End of an interval: a key (exclusive) or no end.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Infinite,
}

/// The smallest key after `key` (a single key as an interval).
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
}

fn end_of(range_end: &[u8], key: &[u8]) -> End {
    match range_end {
        [] => End::Key(successor(key)),
        [0] => End::Infinite,
        e => End::Key(e.to_vec()),
    }
}

/// A union of disjoint, sorted, non-adjacent half-open intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals {
    spans: Vec<(Vec<u8>, End)>,
}

impl Intervals {
    fn from_spans(mut spans: Vec<(Vec<u8>, End)>) -> Self {
        spans.retain(|(s, e)| match e {
            End::Key(k) => s < k,
            End::Infinite => true,
        });
        spans.sort();
        let mut merged: Vec<(Vec<u8>, End)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            if let Some(last) = merged.last_mut() {
                let touches = match &last.1 {
                    End::Infinite => true,
                    End::Key(k) => s <= *k,
                };
                if touches {
                    if e > last.1 {
                        last.1 = e;
                    }
                    continue;
                }
            }
            merged.push((s, e));
        }
        Self { spans: merged }
    }

    /// The span that could hold `key`: the last one starting at or before it.
    fn span_at(&self, key: &[u8]) -> Option<&(Vec<u8>, End)> {
        let i = self.spans.partition_point(|(s, _)| s.as_slice() <= key);
        i.checked_sub(1).map(|i| &self.spans[i])
    }

    /// Whether the union holds every key of the request's range (etcd's
    /// `Intersects` for a single key, `Contains` for a range).
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        let Some((_, end)) = self.span_at(key) else {
            return false;
        };
        let wanted = end_of(range_end, key);
        if let End::Key(k) = &wanted {
            // An empty or inverted range asks for nothing but its start
            // key, as etcd's interval tree treats it.
            if k.as_slice() <= key {
                return match end {
                    End::Infinite => true,
                    End::Key(e) => key < e.as_slice(),
                };
            }
        }
        *end >= wanted
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

/// What a request needs on a key range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One user's merged permissions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPerms {
    read: Intervals,
    write: Intervals,
}

impl UserPerms {
    /// Merges the key permissions of the given roles.
    pub fn merge<'a>(roles: impl IntoIterator<Item = &'a Role>) -> Self {
        let mut read = Vec::new();
        let mut write = Vec::new();
        for p in roles.into_iter().flat_map(|r| &r.key_permission) {
            let span = span_of(p);
            match PermType::try_from(p.perm_type).unwrap_or(PermType::Read) {
                PermType::Read => read.push(span),
                PermType::Write => write.push(span),
                PermType::Readwrite => {
                    read.push(span.clone());
                    write.push(span);
                }
            }
        }
        Self {
            read: Intervals::from_spans(read),
            write: Intervals::from_spans(write),
        }
    }

    pub fn allows(&self, access: Access, key: &[u8], range_end: &[u8]) -> bool {
        match access {
            Access::Read => self.read.covers(key, range_end),
            Access::Write => self.write.covers(key, range_end),
        }
    }
}

fn span_of(p: &Permission) -> (Vec<u8>, End) {
    (p.key.clone(), end_of(&p.range_end, &p.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: PermType, key: &str, end: &str) -> Permission {
        Permission {
            perm_type: t as i32,
            key: key.as_bytes().to_vec(),
            range_end: end.as_bytes().to_vec(),
        }
    }

    fn user(perms: Vec<Permission>) -> UserPerms {
        UserPerms::merge([&Role {
            name: b"r".to_vec(),
            key_permission: perms,
        }])
    }

    #[test]
    fn a_single_key_permission_covers_only_that_key() {
        let u = user(vec![perm(PermType::Read, "a", "")]);
        assert!(u.allows(Access::Read, b"a", b""));
        assert!(!u.allows(Access::Read, b"a\0", b""));
        assert!(!u.allows(Access::Read, b"", b""));
        assert!(!u.allows(Access::Read, b"a", b"b"));
        assert!(u.allows(Access::Read, b"a", b"a\0"));
        assert!(!u.allows(Access::Write, b"a", b""));
    }

    #[test]
    fn a_range_covers_its_keys_and_subranges_only() {
        let u = user(vec![perm(PermType::Write, "a", "c")]);
        assert!(u.allows(Access::Write, b"a", b""));
        assert!(u.allows(Access::Write, b"b\xff", b""));
        assert!(!u.allows(Access::Write, b"c", b""));
        assert!(u.allows(Access::Write, b"a", b"c"));
        assert!(!u.allows(Access::Write, b"a", b"c\0"));
        assert!(!u.allows(Access::Write, b"a", b"\0"));
        assert!(!u.allows(Access::Read, b"a", b""));
    }

    #[test]
    fn from_key_covers_everything_after() {
        let u = user(vec![perm(PermType::Readwrite, "m", "\0")]);
        assert!(u.allows(Access::Read, b"m", b"\0"));
        assert!(u.allows(Access::Write, b"zzzz", b""));
        assert!(u.allows(Access::Read, b"n", b"\0"));
        assert!(!u.allows(Access::Read, b"l", b"\0"));
        assert!(!u.allows(Access::Read, b"l", b""));
    }

    #[test]
    fn adjacent_and_overlapping_permissions_merge() {
        let u = user(vec![
            perm(PermType::Read, "a", "c"),
            perm(PermType::Read, "c", "e"),
            perm(PermType::Readwrite, "d", "f"),
            perm(PermType::Read, "x", ""),
        ]);
        assert!(u.allows(Access::Read, b"a", b"f"));
        assert!(!u.allows(Access::Read, b"a", b"f\0"));
        assert!(u.allows(Access::Write, b"d", b"f"));
        assert!(!u.allows(Access::Write, b"c", b"f"));
        assert!(!u.allows(Access::Read, b"f", b"x"));
        assert!(u.allows(Access::Read, b"x", b""));
    }

    #[test]
    fn a_gap_between_ranges_is_not_covered() {
        let u = user(vec![
            perm(PermType::Read, "a", "b"),
            perm(PermType::Read, "b\0", "d"),
        ]);
        assert!(!u.allows(Access::Read, b"a", b"d"));
        assert!(u.allows(Access::Read, b"b\0", b"c"));
    }

    #[test]
    fn no_roles_no_access() {
        let u = UserPerms::merge([]);
        assert!(!u.allows(Access::Read, b"a", b""));
        assert!(!u.allows(Access::Write, b"", b"\0"));
    }
}
