//! etcd's rules for auth changes, one by one: errors and their order, when
//! the auth revision moves, root's protections, and what survives a reload
//! from the meta records.

use super::state::AuthState;
use super::{Access, AuthError, AuthInfo};
use crate::proto::authpb::{permission::Type as PermType, Permission, UserAddOptions};
use crate::proto::concordpb::auth_request::Request as A;
use crate::proto::concordpb::Authenticate;
use crate::proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest, AuthRoleRevokePermissionRequest, AuthUserAddRequest,
    AuthUserDeleteRequest, AuthUserGrantRoleRequest, AuthUserRevokeRoleRequest,
};
use crate::storage::mem::MemBackend;
use crate::storage::{Backend, Batch};

fn apply(s: &mut AuthState, r: A) -> Result<Option<String>, AuthError> {
    s.apply(&r, &mut Batch::new())
}

fn user_add(name: &str) -> A {
    A::UserAdd(AuthUserAddRequest {
        name: name.into(),
        hashed_password: "hash".into(),
        ..Default::default()
    })
}

fn grant_role(user: &str, role: &str) -> A {
    A::UserGrantRole(AuthUserGrantRoleRequest {
        user: user.into(),
        role: role.into(),
    })
}

fn role_add(name: &str) -> A {
    A::RoleAdd(AuthRoleAddRequest { name: name.into() })
}

fn perm(role: &str, t: PermType, key: &str, end: &str) -> A {
    A::RoleGrantPermission(AuthRoleGrantPermissionRequest {
        name: role.into(),
        perm: Some(Permission {
            perm_type: t as i32,
            key: key.into(),
            range_end: end.into(),
        }),
    })
}

fn enable() -> A {
    A::Enable(AuthEnableRequest {})
}

#[test]
fn enabling_needs_root_with_the_root_role_and_does_not_move_the_revision() {
    let mut s = AuthState::default();
    assert_eq!(s.revision(), 1);
    assert_eq!(apply(&mut s, enable()), Err(AuthError::RootUserNotExist));
    apply(&mut s, user_add("root")).expect("add");
    assert_eq!(apply(&mut s, enable()), Err(AuthError::RootRoleNotExist));
    // The root role need not exist to be granted.
    apply(&mut s, grant_role("root", "root")).expect("grant");
    let before = s.revision();
    apply(&mut s, enable()).expect("enable");
    assert!(s.enabled());
    assert_eq!(s.revision(), before);
    // Again: nothing happens.
    apply(&mut s, enable()).expect("enable again");
    assert_eq!(s.revision(), before);
    apply(&mut s, A::Disable(AuthDisableRequest {})).expect("disable");
    assert!(!s.enabled());
    assert_eq!(s.revision(), before + 1);
}

#[test]
fn user_and_role_errors_are_etcds() {
    let mut s = AuthState::default();
    assert_eq!(apply(&mut s, user_add("")), Err(AuthError::UserEmpty));
    apply(&mut s, user_add("u")).expect("add");
    assert_eq!(
        apply(&mut s, user_add("u")),
        Err(AuthError::UserAlreadyExist)
    );
    assert_eq!(apply(&mut s, role_add("")), Err(AuthError::RoleEmpty));
    apply(&mut s, role_add("r")).expect("role");
    assert_eq!(
        apply(&mut s, role_add("r")),
        Err(AuthError::RoleAlreadyExist)
    );
    assert_eq!(
        apply(&mut s, grant_role("nobody", "r")),
        Err(AuthError::UserNotFound)
    );
    assert_eq!(
        apply(&mut s, grant_role("u", "nope")),
        Err(AuthError::RoleNotFound)
    );
    assert_eq!(
        apply(
            &mut s,
            A::UserRevokeRole(AuthUserRevokeRoleRequest {
                name: "u".into(),
                role: "r".into(),
            })
        ),
        Err(AuthError::RoleNotGranted)
    );
    assert_eq!(
        apply(
            &mut s,
            A::RoleGrantPermission(AuthRoleGrantPermissionRequest {
                name: "r".into(),
                perm: None,
            })
        ),
        Err(AuthError::PermissionNotGiven)
    );
    assert_eq!(
        apply(
            &mut s,
            A::RoleRevokePermission(AuthRoleRevokePermissionRequest {
                role: "r".into(),
                key: b"k".to_vec(),
                range_end: Vec::new(),
            })
        ),
        Err(AuthError::PermissionNotGranted)
    );
    assert_eq!(
        apply(
            &mut s,
            A::UserDelete(AuthUserDeleteRequest {
                name: "nobody".into()
            })
        ),
        Err(AuthError::UserNotFound)
    );
    // Errors change nothing, the revision included.
    let r = s.revision();
    let _ = apply(&mut s, user_add("u"));
    assert_eq!(s.revision(), r);
}

#[test]
fn regranting_a_role_does_not_move_the_revision_a_permission_always_does() {
    let mut s = AuthState::default();
    apply(&mut s, user_add("u")).expect("add");
    apply(&mut s, role_add("r")).expect("role");
    apply(&mut s, grant_role("u", "r")).expect("grant");
    let r = s.revision();
    apply(&mut s, grant_role("u", "r")).expect("grant again");
    assert_eq!(s.revision(), r);
    apply(&mut s, perm("r", PermType::Read, "a", "b")).expect("perm");
    apply(&mut s, perm("r", PermType::Read, "a", "b")).expect("perm again");
    assert_eq!(s.revision(), r + 2);
    // Same key and range end: the type is replaced, not added.
    apply(&mut s, perm("r", PermType::Write, "a", "b")).expect("perm write");
    assert_eq!(s.role("r").expect("role").key_permission.len(), 1);
}

#[test]
fn root_cannot_be_taken_apart_while_auth_is_on() {
    let mut s = AuthState::default();
    apply(&mut s, user_add("root")).expect("add");
    apply(&mut s, role_add("root")).expect("role");
    apply(&mut s, grant_role("root", "root")).expect("grant");
    apply(&mut s, enable()).expect("enable");
    assert_eq!(
        apply(
            &mut s,
            A::UserDelete(AuthUserDeleteRequest {
                name: "root".into()
            })
        ),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        apply(
            &mut s,
            A::UserRevokeRole(AuthUserRevokeRoleRequest {
                name: "root".into(),
                role: "root".into(),
            })
        ),
        Err(AuthError::InvalidAuthMgmt)
    );
    assert_eq!(
        apply(
            &mut s,
            A::RoleDelete(AuthRoleDeleteRequest {
                role: "root".into()
            })
        ),
        Err(AuthError::InvalidAuthMgmt)
    );
}

#[test]
fn permissions_follow_roles_and_revisions() {
    let mut s = AuthState::default();
    for r in [
        user_add("root"),
        grant_role("root", "root"),
        user_add("u"),
        role_add("r"),
        perm("r", PermType::Readwrite, "a", "c"),
        grant_role("u", "r"),
        enable(),
    ] {
        apply(&mut s, r).expect("setup");
    }
    let at = |rev| AuthInfo {
        username: "u".into(),
        revision: rev,
    };
    let now = at(s.revision());
    let p = s.permits(Some(&now)).expect("permits");
    assert!(p.check(Access::Write, b"b", &[]).is_ok());
    assert_eq!(
        p.check(Access::Read, b"c", &[]),
        Err(AuthError::PermissionDenied)
    );
    assert_eq!(s.permits(None).err(), Some(AuthError::UserEmpty));
    // Root may do anything; admin checks ask for root.
    let root = AuthInfo {
        username: "root".into(),
        revision: s.revision(),
    };
    assert!(s.check_admin(Some(&root)).is_ok());
    assert_eq!(s.check_admin(Some(&now)), Err(AuthError::PermissionDenied));
    // A deleted role is gone from its users, and the old revision is old.
    apply(
        &mut s,
        A::RoleDelete(AuthRoleDeleteRequest { role: "r".into() }),
    )
    .expect("delete role");
    assert!(s.user("u").expect("user").roles.is_empty());
    assert_eq!(
        s.permits(Some(&now)).err(),
        Some(AuthError::AuthOldRevision)
    );
    let p = s.permits(Some(&at(s.revision()))).expect("permits");
    assert_eq!(
        p.check(Access::Write, b"b", &[]),
        Err(AuthError::PermissionDenied)
    );
}

#[test]
fn authenticate_needs_auth_on_and_a_user_with_a_password() {
    let mut s = AuthState::default();
    let auth = |name: &str| {
        A::Authenticate(Authenticate {
            name: name.into(),
            simple_token: "x".into(),
        })
    };
    assert_eq!(apply(&mut s, auth("root")), Err(AuthError::AuthNotEnabled));
    for r in [
        user_add("root"),
        grant_role("root", "root"),
        A::UserAdd(AuthUserAddRequest {
            name: "cert".into(),
            options: Some(UserAddOptions { no_password: true }),
            ..Default::default()
        }),
        enable(),
    ] {
        apply(&mut s, r).expect("setup");
    }
    let r = s.revision();
    assert_eq!(apply(&mut s, auth("root")), Ok(Some("root".into())));
    assert_eq!(s.revision(), r, "authenticating changes nothing");
    assert_eq!(apply(&mut s, auth("nobody")), Err(AuthError::AuthFailed));
    assert_eq!(apply(&mut s, auth("cert")), Err(AuthError::AuthFailed));
    assert_eq!(s.password_hash("cert"), Err(AuthError::NoPasswordUser));
}

#[test]
fn the_state_reloads_from_what_its_changes_wrote() {
    let backend = MemBackend::new();
    let mut s = AuthState::default();
    for r in [
        user_add("root"),
        grant_role("root", "root"),
        user_add("u"),
        role_add("r"),
        perm("r", PermType::Read, "a", "\0"),
        grant_role("u", "r"),
        enable(),
        A::UserDelete(AuthUserDeleteRequest { name: "u".into() }),
    ] {
        let mut b = Batch::new();
        s.apply(&r, &mut b).expect("apply");
        backend.write(b).expect("write");
    }
    let view = backend.snapshot();
    assert_eq!(AuthState::load(view.as_ref()).expect("load"), s);
}
