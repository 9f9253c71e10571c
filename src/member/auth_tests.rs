//! The applier's auth checks on a running one-member member: a write
//! proposed with credentials checked before an auth change is refused
//! when it applies after it (etcd's `revision of auth store is old`), so a
//! revoked permission never lets a write through; the member's own
//! requests are never checked.

use std::sync::Arc;

use super::*;
use crate::auth::{AuthError, AuthInfo};
use crate::cluster::Bootstrap;
use crate::proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use crate::proto::concordpb::{auth_request::Request as A, AuthRequest, RequestHeader};
use crate::proto::etcdserverpb::{
    AuthEnableRequest, AuthRoleAddRequest, AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserGrantRoleRequest, PutRequest,
    RangeRequest,
};
use crate::storage::mem::MemBackend;
use internal_request::Request as R;

async fn running() -> Handle {
    let bootstrap = Bootstrap {
        name: "a".into(),
        initial_cluster: "a=http://a:2380".into(),
        token: "t".into(),
        advertise_peer_urls: vec!["http://a:2380".into()],
        advertise_client_urls: vec!["http://a:2379".into()],
        existing: None,
    };
    let (member, handle) = Member::open(
        Arc::new(MemBackend::new()),
        &bootstrap,
        MemberConfig::default(),
    )
    .expect("opens");
    tokio::spawn(member.run());
    handle
}

/// An auth change as the member's own request (no sender: unchecked).
async fn admin(h: &Handle, r: A) {
    h.propose(R::Auth(AuthRequest { request: Some(r) }))
        .await
        .expect("auth change applies");
}

fn put(key: &str) -> R {
    R::Put(PutRequest {
        key: key.into(),
        value: b"v".to_vec(),
        ..Default::default()
    })
}

fn header(i: &AuthInfo) -> Option<RequestHeader> {
    Some(RequestHeader {
        username: i.username.clone(),
        auth_revision: i.revision,
    })
}

fn auth_error(r: Result<Applied, MemberError>) -> Option<AuthError> {
    match r {
        Err(MemberError::Auth(e)) => Some(e),
        _ => None,
    }
}

#[tokio::test]
async fn a_write_checked_before_a_revoke_is_refused_when_it_applies_after_it() {
    let h = running().await;
    for r in [
        A::UserAdd(AuthUserAddRequest {
            name: "root".into(),
            hashed_password: "x".into(),
            ..Default::default()
        }),
        A::UserGrantRole(AuthUserGrantRoleRequest {
            user: "root".into(),
            role: "root".into(),
        }),
        A::UserAdd(AuthUserAddRequest {
            name: "u".into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        }),
        A::RoleAdd(AuthRoleAddRequest { name: "r".into() }),
        A::RoleGrantPermission(AuthRoleGrantPermissionRequest {
            name: "r".into(),
            perm: Some(Permission {
                perm_type: PermType::Readwrite as i32,
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
            }),
        }),
        A::UserGrantRole(AuthUserGrantRoleRequest {
            user: "u".into(),
            role: "r".into(),
        }),
        A::Enable(AuthEnableRequest {}),
    ] {
        admin(&h, r).await;
    }
    let checked = AuthInfo {
        username: "u".into(),
        revision: h.auth().revision(),
    };
    // Permitted at the revision it was checked at.
    h.propose_as(header(&checked), put("a1"))
        .await
        .expect("permitted");
    // Outside the permission, and without a sender at all.
    assert_eq!(
        auth_error(h.propose_as(header(&checked), put("c")).await),
        Some(AuthError::PermissionDenied)
    );
    assert_eq!(
        auth_error(
            h.propose_as(Some(RequestHeader::default()), put("a2"))
                .await
        ),
        Some(AuthError::UserEmpty)
    );
    // The permission is revoked; a write checked before is refused.
    admin(
        &h,
        A::RoleRevokePermission(AuthRoleRevokePermissionRequest {
            role: "r".into(),
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
        }),
    )
    .await;
    assert!(h.auth().revision() > checked.revision);
    assert_eq!(
        auth_error(h.propose_as(header(&checked), put("a3")).await),
        Some(AuthError::AuthOldRevision)
    );
    let now = AuthInfo {
        revision: h.auth().revision(),
        ..checked
    };
    assert_eq!(
        auth_error(h.propose_as(header(&now), put("a3")).await),
        Some(AuthError::PermissionDenied)
    );
    let (res, _) = h
        .store()
        .range(&RangeRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            ..Default::default()
        })
        .expect("range");
    let keys: Vec<_> = res.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(keys, [b"a1".to_vec()], "only the permitted write applied");
    // The member's own requests (no header) are not checked.
    h.propose(put("c")).await.expect("unchecked");
}
