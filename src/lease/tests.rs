//! Lessor unit tests: etcd's TTL rules, renewals and checkpoints, key
//! attachment, restart, and leases across repeated promotions (#9888).

use std::time::Duration;

use super::{LeaseError, Lessor};
use crate::storage::mem::MemBackend;
use crate::storage::{Backend, Batch};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn min_ttl_follows_etcds_formula() {
    // Defaults: 100 ms heartbeat, 1000 ms election: 10 ticks -> 15 * 100 ms -> 2 s.
    assert_eq!(Lessor::min_ttl_secs(100, 1000), 2);
    // 3 ticks: (9 / 2) = 4 * 100 ms = 0.4 s -> 1 s.
    assert_eq!(Lessor::min_ttl_secs(100, 300), 1);
    // 50 ms / 5000 ms: 100 ticks -> 150 * 50 ms = 7.5 s -> 8 s.
    assert_eq!(Lessor::min_ttl_secs(50, 5000), 8);
    let l = Lessor::new(2);
    assert_eq!(l.effective_ttl(1), Ok(2));
    assert_eq!(l.effective_ttl(-5), Ok(2));
    assert_eq!(l.effective_ttl(60), Ok(60));
    assert_eq!(l.effective_ttl(9_000_000_001), Err(LeaseError::TtlTooLarge));
}

#[test]
fn a_renewed_lease_lives_and_an_abandoned_one_expires() {
    let mut l = Lessor::new(2);
    l.promote(Duration::ZERO);
    let mut b = Batch::new();
    l.grant(1, 10, s(0), &mut b).expect("grant");
    l.grant(2, 10, s(0), &mut b).expect("grant");
    assert_eq!(l.grant(1, 10, s(0), &mut b), Err(LeaseError::Exists));
    assert_eq!(l.renew(1, s(8)), Ok(10));
    assert_eq!(l.take_expired(s(9), 10), Vec::<i64>::new());
    assert_eq!(l.take_expired(s(10), 10), vec![2]);
    // Once taken, a lease is not offered again until the revoke fails or
    // has not applied for REVOKE_RETRY.
    assert_eq!(l.take_expired(s(11), 10), Vec::<i64>::new());
    l.revoke_failed(2);
    assert_eq!(l.take_expired(s(11), 10), vec![2]);
    assert_eq!(l.take_expired(s(13), 10), Vec::<i64>::new());
    assert_eq!(l.take_expired(s(14), 10), vec![2]);
    assert_eq!(l.remaining_secs(1, ms(8_500)), Some(9));
    // Lease 2's revoke (proposed at 14 s) did not apply by 17 s: retried.
    assert_eq!(l.take_expired(s(18), 10), vec![1, 2]);
    assert_eq!(
        l.renew(2, s(18)),
        Err(LeaseError::NotFound),
        "a lease being revoked is not renewed"
    );
    assert_eq!(l.renew(7, s(1)), Err(LeaseError::NotFound));
}

#[test]
fn keys_follow_their_lease_and_a_revoke_returns_them_sorted() {
    let mut l = Lessor::new(2);
    let mut b = Batch::new();
    l.grant(1, 10, s(0), &mut b).expect("grant");
    l.grant(2, 10, s(0), &mut b).expect("grant");
    l.key_changed(b"b", Some(1));
    l.key_changed(b"a", Some(1));
    l.key_changed(b"c", Some(2));
    l.key_changed(b"c", Some(1)); // moved to lease 1
    l.key_changed(b"b", Some(0)); // detached by a put without lease
    l.key_changed(b"d", Some(9)); // unknown lease: not attached
    assert_eq!(l.keys_of(1), Ok(vec![b"a".to_vec(), b"c".to_vec()]));
    assert_eq!(l.keys_of(2), Ok(vec![]));
    l.key_changed(b"a", None); // deleted
    assert_eq!(l.keys_of(1), Ok(vec![b"c".to_vec()]));
    l.revoke(1, &mut b).expect("revoke");
    assert_eq!(l.keys_of(1), Err(LeaseError::NotFound));
    assert_eq!(l.revoke(1, &mut b), Err(LeaseError::NotFound));
}

#[test]
fn renewals_reach_other_members_as_checkpoints() {
    let mut leader = Lessor::new(2);
    let mut follower = Lessor::new(2);
    leader.promote(Duration::ZERO);
    let mut b = Batch::new();
    leader.grant(1, 10, s(0), &mut b).expect("grant");
    follower.grant(1, 10, s(0), &mut b).expect("grant");
    leader.renew(1, s(7)).expect("renew");
    let cps = leader.take_checkpoints(100);
    assert_eq!(cps, vec![(1, 10)]);
    assert!(leader.take_checkpoints(100).is_empty());
    for (id, rem) in cps {
        follower.checkpoint(id, rem, s(7), &mut b);
    }
    // The follower, promoted after the leader is lost, keeps the renewal.
    follower.promote(s(1));
    assert_eq!(follower.take_expired(s(17), 10), Vec::<i64>::new());
    assert_eq!(follower.take_expired(s(18), 10), vec![1]);
}

#[test]
fn repeated_promotions_do_not_keep_a_lease_alive() {
    // etcd #9888: without renewals, a lease must expire even if leadership
    // changes faster than its TTL. Here it changes every 500 ms for 60 s.
    let mut l = Lessor::new(2);
    let mut b = Batch::new();
    l.grant(1, 5, s(0), &mut b).expect("grant");
    let grace = s(1);
    let mut expired_at = None;
    for step in 0..120u64 {
        let now = ms(step * 500);
        l.demote();
        l.promote(grace);
        for (id, rem) in l.take_checkpoints(100) {
            l.checkpoint(id, rem, now, &mut b);
        }
        if !l.take_expired(now, 10).is_empty() {
            expired_at = Some(now);
            break;
        }
    }
    assert_eq!(expired_at, Some(s(6)), "expires one grace after its TTL");
}

#[test]
fn restart_restores_leases_attached_keys_and_checkpointed_ttl() {
    let backend = MemBackend::new();
    let mut l = Lessor::new(2);
    let mut b = Batch::new();
    l.grant(1, 30, s(0), &mut b).expect("grant");
    l.grant(2, 30, s(0), &mut b).expect("grant");
    l.grant(3, 30, s(0), &mut b).expect("grant");
    l.checkpoint(2, 12, s(18), &mut b);
    l.revoke(3, &mut b).expect("revoke");
    backend.write(b).expect("write");
    let mut r = Lessor::new(2);
    let attached = vec![(b"k1".to_vec(), 1), (b"k2".to_vec(), 2), (b"x".to_vec(), 3)];
    r.restore(&backend, attached, s(100)).expect("restore");
    assert_eq!(r.len(), 2);
    assert_eq!(r.keys_of(1), Ok(vec![b"k1".to_vec()]));
    assert_eq!(r.keys_of(2), Ok(vec![b"k2".to_vec()]));
    assert!(!r.contains(3));
    // Lease 2 restarts from its checkpoint, lease 1 from its full TTL.
    assert_eq!(r.remaining_secs(2, s(100)), Some(12));
    assert_eq!(r.remaining_secs(1, s(100)), Some(30));
    assert_eq!(r.ids_by_expiry(), vec![2, 1]);
}
