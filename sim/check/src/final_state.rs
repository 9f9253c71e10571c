//! Divergence: each member's full final state must equal the log replayed
//! to the revision that member reached. The linearizability checker trusts
//! one log; this catches members that applied something else.

use std::collections::BTreeMap;

use crate::history::{Bytes, Kv};
use crate::linearizable::replay;
use crate::log::Entry;
use crate::violation::{cut, show_bytes, show_kv, Found, Violation};

/// How many differing keys one `DivergentState` names.
const DIFFERENCES_SHOWN_MAX: usize = 3;

/// Checks each `(member, revision, state)` of `states` against `log`
/// (from `base`, the full state at `base_revision`): `DivergentState` when
/// the state differs from the log's at that revision or the revision is
/// outside the log; `MalformedLog` if the log itself is malformed.
pub fn check_final_states(
    base: &[Kv],
    base_revision: i64,
    log: &[Entry],
    states: &[(u64, i64, Vec<Kv>)],
) -> Result<(), Vec<Violation>> {
    let index = replay(base, base_revision, log)?;
    let mut found = Found::default();
    for (member, revision, state) in states {
        let Some(view) = index.at(*revision) else {
            found.push(Violation::DivergentState {
                member: *member,
                revision: *revision,
                detail: format!(
                    "the log covers revisions {} to {} only",
                    index.base_revision(),
                    index.last_revision()
                ),
            });
            continue;
        };
        let differences = differences(&view.all(), state);
        if !differences.is_empty() {
            let shown: Vec<&str> = differences
                .iter()
                .take(DIFFERENCES_SHOWN_MAX)
                .map(String::as_str)
                .collect();
            found.push(Violation::DivergentState {
                member: *member,
                revision: *revision,
                detail: cut(format!(
                    "{} keys differ: {}",
                    differences.len(),
                    shown.join("; ")
                )),
            });
        }
    }
    found.into_result(())
}

/// The keys on which `want` and `got` differ, described, in key order.
/// A key twice in `got` is a difference too.
fn differences(want: &[Kv], got: &[Kv]) -> Vec<String> {
    let mut keys: BTreeMap<&Bytes, (Option<&Kv>, Vec<&Kv>)> = BTreeMap::new();
    for kv in want {
        keys.entry(&kv.key).or_default().0 = Some(kv);
    }
    for kv in got {
        keys.entry(&kv.key).or_default().1.push(kv);
    }
    keys.into_iter()
        .filter_map(|(key, (want, got))| match (want, got.as_slice()) {
            (Some(w), [g]) if w == *g => None,
            (Some(w), []) => Some(format!("missing {}", show_kv(w))),
            (None, [g]) => Some(format!("extra {}", show_kv(g))),
            (Some(w), [g]) => Some(format!("{} instead of {}", show_kv(g), show_kv(w))),
            (_, many) => Some(format!("{} {} times", show_bytes(key), many.len())),
        })
        .collect()
}
