//! The applier's auth side (etcd's `apply_auth.go`): the permission check
//! of a client's request at the auth revision it was checked at when it
//! was proposed, and the application of auth changes.
//!
//! A request proposed before an auth change that matters to it is refused
//! with `AuthOldRevision` (the proposing member checks again and proposes
//! anew), so a revoked permission never lets a write through.

use super::{Applied, Member, MemberError};
use crate::auth::check::{check_delete, check_put, check_txn, lease_keys_writable};
use crate::auth::{AuthError, AuthInfo, AuthState};
use crate::lease::Lessor;
use crate::proto::concordpb::auth_request;
use crate::proto::concordpb::{internal_request::Request, AuthRequest, RequestHeader};
use crate::proto::etcdserverpb::{request_op, TxnRequest};
use crate::storage::Batch;

/// The sender named by a request header.
pub(super) fn info_of(h: &RequestHeader) -> AuthInfo {
    AuthInfo {
        username: h.username.clone(),
        revision: h.auth_revision,
    }
}

/// Whether the sender of `req` may apply it. The member's own requests
/// (no header) and every request while auth is disabled pass.
pub(super) fn check(
    auth: &AuthState,
    header: Option<&RequestHeader>,
    req: &Request,
    lessor: &Lessor,
) -> Result<(), AuthError> {
    let Some(h) = header else {
        return Ok(());
    };
    if !auth.enabled() {
        return Ok(());
    }
    let info = info_of(h);
    let lease_keys = |id: i64| lessor.keys_of(id).unwrap_or_default();
    match req {
        Request::Auth(AuthRequest { request: Some(r) }) => {
            if AuthState::needs_admin(r) {
                auth.check_admin(Some(&info))?;
            }
            Ok(())
        }
        Request::Put(p) => {
            let permits = auth.permits(Some(&info))?;
            check_put(&permits, &p.key, p.lease, p.prev_kv, &lease_keys)
        }
        Request::DeleteRange(d) => {
            let permits = auth.permits(Some(&info))?;
            check_delete(&permits, &d.key, &d.range_end, d.prev_kv)
        }
        Request::Txn(t) => {
            let permits = auth.permits(Some(&info))?;
            check_txn(&permits, t, &lease_keys)
        }
        // concord asks root for a compaction (etcd 3.4 and 3.5 ask nothing).
        Request::Compaction(_) => auth.check_admin(Some(&info)),
        Request::LeaseRevoke(r) => {
            let permits = auth.permits(Some(&info))?;
            lease_keys_writable(&permits, r.id, &lease_keys)
        }
        _ => Ok(()),
    }
}

/// Whether the request's check reads the lessor's key attachments, which
/// the applier learns only after a group is written: such a request starts
/// a group of its own.
pub(super) fn reads_lease_keys(req: &Request) -> bool {
    fn txn(t: &TxnRequest) -> bool {
        t.success
            .iter()
            .chain(&t.failure)
            .any(|op| match &op.request {
                Some(request_op::Request::RequestPut(p)) => p.lease != 0,
                Some(request_op::Request::RequestTxn(t)) => txn(t),
                _ => false,
            })
    }
    match req {
        Request::Put(p) => p.lease != 0,
        Request::Txn(t) => txn(t),
        _ => false,
    }
}

/// What an applied auth change does once its group is written.
pub(super) struct AuthEffect {
    state: Option<AuthState>,
    tokens: TokenEffect,
}

enum TokenEffect {
    None,
    Assign {
        prefix: String,
        index: u64,
        user: String,
    },
    ForgetUser(String),
    ForgetAll,
}

impl Member {
    /// Applies an auth request (alone in its group) to a copy of the
    /// state; the copy replaces the state once the group is written.
    pub(super) fn apply_auth(
        &mut self,
        batch: &mut Batch,
        auth: &AuthState,
        index: u64,
        req: &AuthRequest,
    ) -> (Result<Applied, MemberError>, Option<AuthEffect>) {
        let Some(r) = &req.request else {
            return (
                Ok(Applied::Auth {
                    token: String::new(),
                }),
                None,
            );
        };
        let mut next = auth.clone();
        match next.apply(r, batch) {
            Err(e) => (Err(MemberError::Auth(e)), None),
            Ok(authenticated) => {
                let tokens = match (r, authenticated) {
                    (auth_request::Request::Authenticate(a), Some(user)) => TokenEffect::Assign {
                        prefix: a.simple_token.clone(),
                        index,
                        user,
                    },
                    (auth_request::Request::UserDelete(u), _) => {
                        TokenEffect::ForgetUser(u.name.clone())
                    }
                    (auth_request::Request::UserChangePassword(u), _) => {
                        TokenEffect::ForgetUser(u.name.clone())
                    }
                    (auth_request::Request::Disable(_), _) => TokenEffect::ForgetAll,
                    _ => TokenEffect::None,
                };
                let token = match &tokens {
                    TokenEffect::Assign { user, .. } if self.signs_jwt() => {
                        match self.sign_jwt(user, next.revision()) {
                            Ok(t) => t,
                            Err(e) => return (Err(MemberError::Auth(e)), None),
                        }
                    }
                    TokenEffect::Assign { prefix, index, .. } => format!("{prefix}.{index}"),
                    _ => String::new(),
                };
                let authenticate = matches!(r, auth_request::Request::Authenticate(_));
                let effect = AuthEffect {
                    state: (!authenticate).then_some(next),
                    tokens,
                };
                (Ok(Applied::Auth { token }), Some(effect))
            }
        }
    }

    /// Whether tokens are JWTs (signed at apply, remembered nowhere).
    fn signs_jwt(&self) -> bool {
        #[cfg(not(madsim))]
        return self.shared.cfg.jwt.is_some();
        #[cfg(madsim)]
        false
    }

    #[cfg(not(madsim))]
    fn sign_jwt(&self, user: &str, revision: u64) -> Result<String, AuthError> {
        match &self.shared.cfg.jwt {
            Some(j) => j.sign(user, revision),
            None => Err(AuthError::AuthFailed),
        }
    }

    #[cfg(madsim)]
    fn sign_jwt(&self, _user: &str, _revision: u64) -> Result<String, AuthError> {
        Err(AuthError::AuthFailed)
    }

    /// Publishes an applied auth change (after its group is written).
    pub(super) fn auth_took_effect(&mut self, effect: AuthEffect) {
        if let Some(state) = effect.state {
            self.shared.set_auth(state);
        }
        let now = self.shared.now();
        let mut tokens = self.shared.tokens();
        match effect.tokens {
            TokenEffect::None => {}
            TokenEffect::Assign {
                prefix,
                index,
                user,
            } => {
                if !self.signs_jwt() {
                    tokens.assign(&prefix, index, &user, now);
                }
            }
            TokenEffect::ForgetUser(u) => tokens.invalidate_user(&u),
            TokenEffect::ForgetAll => tokens.clear(),
        }
    }
}
