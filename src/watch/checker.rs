//! The watch checker: given the history of writes and what one watcher
//! received, says whether the watcher's stream was correct. It knows nothing
//! of the server; tests and the simulator feed it.
//!
//! Properties, each a named [`Violation`]:
//! - **Ordered**: events come in revision order (and sub-revision order
//!   within a revision);
//! - **Unique**: no change is delivered twice;
//! - **Atomic**: all the matching events of one revision arrive in one
//!   response (fragments of one response are joined first);
//! - **Reliable**: from the start revision up to the last revision the
//!   watcher is known to have reached (its last event, or a progress
//!   notification), every matching change is delivered: no gap;
//! - **Resumable**: nothing before the start revision is delivered;
//! - **Filtered**: NOPUT / NODELETE are respected;
//! - **PrevKv**: `prev_kv`, when asked for, is the key's previous version.
//!
//! A watcher cancelled with `compact_revision` is only checked up to the
//! cancel, and the cancel is itself checked (its start must be compacted).

use std::collections::BTreeMap;

/// One change of the history: a put or a delete of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryChange {
    pub rev: i64,
    pub sub: i64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
}

/// Every change the store made, in (revision, sub) order.
#[derive(Debug, Clone, Default)]
pub struct History {
    changes: Vec<HistoryChange>,
}

impl History {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a change; changes must come in (rev, sub) order.
    pub fn push(&mut self, c: HistoryChange) {
        if let Some(last) = self.changes.last() {
            assert!(
                (c.rev, c.sub) > (last.rev, last.sub),
                "history out of order: {}.{} after {}.{}",
                c.rev,
                c.sub,
                last.rev,
                last.sub
            );
        }
        self.changes.push(c);
    }

    pub fn put(&mut self, rev: i64, key: &[u8], value: &[u8]) {
        let sub = self.next_sub(rev);
        self.push(HistoryChange {
            rev,
            sub,
            key: key.to_vec(),
            value: Some(value.to_vec()),
        });
    }

    pub fn delete(&mut self, rev: i64, key: &[u8]) {
        let sub = self.next_sub(rev);
        self.push(HistoryChange {
            rev,
            sub,
            key: key.to_vec(),
            value: None,
        });
    }

    fn next_sub(&self, rev: i64) -> i64 {
        match self.changes.last() {
            Some(l) if l.rev == rev => l.sub + 1,
            _ => 0,
        }
    }

    pub fn changes(&self) -> &[HistoryChange] {
        &self.changes
    }

    /// The value of `key` just before (rev, sub), if it existed.
    fn value_before(&self, key: &[u8], rev: i64, sub: i64) -> Option<&[u8]> {
        self.changes
            .iter()
            .rev()
            .filter(|c| (c.rev, c.sub) < (rev, sub) && c.key == key)
            .map(|c| c.value.as_deref())
            .next()
            .flatten()
    }
}

/// What the watcher asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSpec {
    pub key: Vec<u8>,
    /// Empty: the single key; `[0]`: every key ≥ `key`.
    pub range_end: Vec<u8>,
    /// The first revision wanted (0 is not allowed here: resolve it to the
    /// created header's revision + 1 first).
    pub start_rev: i64,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
}

/// One received event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    pub rev: i64,
    pub key: Vec<u8>,
    /// `None` for a delete.
    pub value: Option<Vec<u8>>,
    /// The `prev_kv` value if one came.
    pub prev_value: Option<Vec<u8>>,
}

/// One received response (after joining fragments).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeenResponse {
    pub header_rev: i64,
    pub events: Vec<SeenEvent>,
    pub compact_revision: i64,
    pub canceled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Ordered {
        after: (i64, Vec<u8>),
        got: (i64, Vec<u8>),
    },
    Unique {
        rev: i64,
        key: Vec<u8>,
    },
    Atomic {
        rev: i64,
        responses: usize,
    },
    Reliable {
        missing_rev: i64,
        key: Vec<u8>,
    },
    Unexpected {
        rev: i64,
        key: Vec<u8>,
    },
    Resumable {
        rev: i64,
        start_rev: i64,
    },
    Filtered {
        rev: i64,
        key: Vec<u8>,
    },
    WrongValue {
        rev: i64,
        key: Vec<u8>,
    },
    PrevKv {
        rev: i64,
        key: Vec<u8>,
    },
    BadCompactCancel {
        start_rev: i64,
        compact_revision: i64,
    },
}

fn in_range(spec: &WatchSpec, key: &[u8]) -> bool {
    super::key_in_range(key, &spec.key, &spec.range_end)
}

/// Checks one watcher's responses against the history.
pub fn check(history: &History, spec: &WatchSpec, seen: &[SeenResponse]) -> Vec<Violation> {
    check_compacted(history, spec, seen, 0)
}

/// Like [`check`], for a watcher that ran while the store may have been
/// compacted up to `compacted`: as etcd, the server omits a `prev_kv` it
/// can no longer read (the event's revision - 1 is below the compaction),
/// so a missing `prev_kv` at a revision ≤ `compacted` is not a violation
/// (a wrong one still is).
pub fn check_compacted(
    history: &History,
    spec: &WatchSpec,
    seen: &[SeenResponse],
    compacted: i64,
) -> Vec<Violation> {
    let mut out = Vec::new();
    // Where each change sits in the history, to order events by (rev, sub).
    let position: BTreeMap<(i64, &[u8]), (usize, &HistoryChange)> = history
        .changes
        .iter()
        .enumerate()
        .map(|(i, c)| ((c.rev, c.key.as_slice()), (i, c)))
        .collect();
    let mut reached = spec.start_rev - 1;
    let mut last: Option<(usize, i64, Vec<u8>)> = None;
    let mut delivered: BTreeMap<usize, ()> = BTreeMap::new();
    let mut response_of_rev: BTreeMap<i64, usize> = BTreeMap::new();
    for (ri, r) in seen.iter().enumerate() {
        if r.compact_revision != 0 {
            if spec.start_rev >= r.compact_revision {
                out.push(Violation::BadCompactCancel {
                    start_rev: spec.start_rev,
                    compact_revision: r.compact_revision,
                });
            }
            break;
        }
        for e in &r.events {
            if e.rev < spec.start_rev {
                out.push(Violation::Resumable {
                    rev: e.rev,
                    start_rev: spec.start_rev,
                });
            }
            match response_of_rev.get(&e.rev) {
                Some(&prev) if prev != ri => out.push(Violation::Atomic {
                    rev: e.rev,
                    responses: 2,
                }),
                _ => {
                    response_of_rev.insert(e.rev, ri);
                }
            }
            let Some(&(pos, hc)) = position.get(&(e.rev, e.key.as_slice())) else {
                out.push(Violation::Unexpected {
                    rev: e.rev,
                    key: e.key.clone(),
                });
                continue;
            };
            if let Some((lpos, lrev, lkey)) = &last {
                if pos <= *lpos {
                    let v = if pos == *lpos {
                        Violation::Unique {
                            rev: e.rev,
                            key: e.key.clone(),
                        }
                    } else {
                        Violation::Ordered {
                            after: (*lrev, lkey.clone()),
                            got: (e.rev, e.key.clone()),
                        }
                    };
                    out.push(v);
                }
            }
            if delivered.insert(pos, ()).is_some()
                && !matches!(out.last(), Some(Violation::Unique { .. }))
            {
                out.push(Violation::Unique {
                    rev: e.rev,
                    key: e.key.clone(),
                });
            }
            last = Some((pos, e.rev, e.key.clone()));
            reached = reached.max(e.rev);
            if !in_range(spec, &e.key) {
                out.push(Violation::Unexpected {
                    rev: e.rev,
                    key: e.key.clone(),
                });
            }
            let filtered = match hc.value {
                Some(_) => spec.no_put,
                None => spec.no_delete,
            };
            if filtered {
                out.push(Violation::Filtered {
                    rev: e.rev,
                    key: e.key.clone(),
                });
            }
            if e.value != hc.value {
                out.push(Violation::WrongValue {
                    rev: e.rev,
                    key: e.key.clone(),
                });
            }
            if spec.prev_kv {
                let want = history.value_before(&hc.key, hc.rev, hc.sub);
                let unreadable = e.prev_value.is_none() && e.rev <= compacted;
                if e.prev_value.as_deref() != want && !unreadable {
                    out.push(Violation::PrevKv {
                        rev: e.rev,
                        key: e.key.clone(),
                    });
                }
            }
        }
        if r.events.is_empty() && !r.canceled {
            // A progress notification: everything up to its revision is in.
            reached = reached.max(r.header_rev);
        }
    }
    for (i, c) in history.changes.iter().enumerate() {
        if c.rev < spec.start_rev || c.rev > reached || !in_range(spec, &c.key) {
            continue;
        }
        let filtered = match c.value {
            Some(_) => spec.no_put,
            None => spec.no_delete,
        };
        if !filtered && !delivered.contains_key(&i) {
            out.push(Violation::Reliable {
                missing_rev: c.rev,
                key: c.key.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn history() -> History {
        let mut h = History::new();
        h.put(2, b"a", b"1");
        h.put(3, b"b", b"1");
        h.put(4, b"a", b"2");
        h.put(4, b"c", b"1"); // a txn: two changes at revision 4
        h.delete(5, b"a");
        h.put(6, b"a", b"3");
        h
    }

    fn ev(rev: i64, key: &str, value: Option<&str>, prev: Option<&str>) -> SeenEvent {
        SeenEvent {
            rev,
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
            prev_value: prev.map(|v| v.as_bytes().to_vec()),
        }
    }

    fn resp(events: Vec<SeenEvent>) -> SeenResponse {
        let header_rev = events.last().map_or(0, |e| e.rev);
        SeenResponse {
            header_rev,
            events,
            ..SeenResponse::default()
        }
    }

    fn all_keys(start_rev: i64) -> WatchSpec {
        WatchSpec {
            key: vec![0],
            range_end: vec![0],
            start_rev,
            ..WatchSpec::default()
        }
    }

    fn good_stream() -> Vec<SeenResponse> {
        vec![
            resp(vec![ev(2, "a", Some("1"), None)]),
            resp(vec![ev(3, "b", Some("1"), None)]),
            resp(vec![
                ev(4, "a", Some("2"), None),
                ev(4, "c", Some("1"), None),
            ]),
            resp(vec![ev(5, "a", None, None)]),
            resp(vec![ev(6, "a", Some("3"), None)]),
        ]
    }

    #[test]
    fn a_correct_stream_passes() {
        assert_eq!(check(&history(), &all_keys(1), &good_stream()), vec![]);
    }

    #[test]
    fn a_skipped_event_is_a_reliability_violation() {
        let mut s = good_stream();
        s.remove(1);
        let v = check(&history(), &all_keys(1), &s);
        assert_eq!(
            v,
            vec![Violation::Reliable {
                missing_rev: 3,
                key: b"b".to_vec()
            }]
        );
    }

    #[test]
    fn a_missing_tail_is_caught_by_a_progress_notification() {
        let mut s = good_stream();
        s.pop();
        assert_eq!(check(&history(), &all_keys(1), &s), vec![]);
        s.push(SeenResponse {
            header_rev: 6,
            ..SeenResponse::default()
        });
        assert_eq!(
            check(&history(), &all_keys(1), &s),
            vec![Violation::Reliable {
                missing_rev: 6,
                key: b"a".to_vec()
            }]
        );
    }

    #[test]
    fn duplicates_and_reordering_are_caught() {
        let mut s = good_stream();
        s.insert(2, s[1].clone());
        assert!(check(&history(), &all_keys(1), &s)
            .iter()
            .any(|v| matches!(v, Violation::Unique { rev: 3, .. })));
        let mut s = good_stream();
        s.swap(0, 1);
        assert!(check(&history(), &all_keys(1), &s)
            .iter()
            .any(|v| matches!(v, Violation::Ordered { .. })));
    }

    #[test]
    fn a_revision_split_across_responses_is_not_atomic() {
        let mut s = good_stream();
        s[2] = resp(vec![ev(4, "a", Some("2"), None)]);
        s.insert(3, resp(vec![ev(4, "c", Some("1"), None)]));
        assert_eq!(
            check(&history(), &all_keys(1), &s),
            vec![Violation::Atomic {
                rev: 4,
                responses: 2
            }]
        );
    }

    #[test]
    fn events_before_the_start_and_filtered_events_are_caught() {
        let v = check(&history(), &all_keys(3), &good_stream());
        assert!(v.contains(&Violation::Resumable {
            rev: 2,
            start_rev: 3
        }));
        let spec = WatchSpec {
            no_delete: true,
            ..all_keys(1)
        };
        let v = check(&history(), &spec, &good_stream());
        assert_eq!(
            v,
            vec![Violation::Filtered {
                rev: 5,
                key: b"a".to_vec()
            }]
        );
    }

    #[test]
    fn prev_kv_is_the_previous_version() {
        let spec = WatchSpec {
            key: b"a".to_vec(),
            prev_kv: true,
            start_rev: 1,
            ..WatchSpec::default()
        };
        let good = vec![
            resp(vec![ev(2, "a", Some("1"), None)]),
            resp(vec![ev(4, "a", Some("2"), Some("1"))]),
            resp(vec![ev(5, "a", None, Some("2"))]),
            resp(vec![ev(6, "a", Some("3"), None)]),
        ];
        assert_eq!(check(&history(), &spec, &good), vec![]);
        let mut bad = good.clone();
        bad[2] = resp(vec![ev(5, "a", None, Some("1"))]);
        assert_eq!(
            check(&history(), &spec, &bad),
            vec![Violation::PrevKv {
                rev: 5,
                key: b"a".to_vec()
            }]
        );
    }

    #[test]
    fn prev_kv_may_be_missing_only_where_compacted() {
        let spec = WatchSpec {
            key: b"a".to_vec(),
            prev_kv: true,
            start_rev: 5,
            ..WatchSpec::default()
        };
        // The delete at 5: its previous version (4) is gone once the store
        // is compacted at 5, so etcd sends no prev_kv.
        let missing = vec![
            resp(vec![ev(5, "a", None, None)]),
            resp(vec![ev(6, "a", Some("3"), None)]),
        ];
        assert_eq!(check_compacted(&history(), &spec, &missing, 5), vec![]);
        let want = vec![Violation::PrevKv {
            rev: 5,
            key: b"a".to_vec(),
        }];
        assert_eq!(check_compacted(&history(), &spec, &missing, 4), want);
        assert_eq!(check(&history(), &spec, &missing), want);
        // A wrong prev_kv is wrong whatever the compaction.
        let wrong = vec![resp(vec![ev(5, "a", None, Some("1"))])];
        assert_eq!(check_compacted(&history(), &spec, &wrong, 5), want);
    }

    #[test]
    fn a_compacted_cancel_must_be_for_a_compacted_start() {
        let cancel = SeenResponse {
            canceled: true,
            compact_revision: 4,
            ..SeenResponse::default()
        };
        assert_eq!(
            check(&history(), &all_keys(2), std::slice::from_ref(&cancel)),
            vec![]
        );
        assert_eq!(
            check(&history(), &all_keys(4), &[cancel]),
            vec![Violation::BadCompactCancel {
                start_rev: 4,
                compact_revision: 4
            }]
        );
    }
}
