//! Who sends a request and what they may do (etcd's `AuthInfoFromCtx` and
//! the checks around it): the token in the gRPC metadata (`token`, or
//! `authorization` from the JSON gateway) or, without one, the verified
//! client certificate's common name; reads checked here at the auth
//! revision of the lookup and answered only if the auth state did not
//! change meanwhile, writes proposed with the sender in their header and
//! checked again by the applier (proposed anew when the auth state changed
//! between the two: etcd's retry on `revision of auth store is old`).

use std::sync::Arc;

use tonic::Status;

use super::error;
use crate::auth::state::Permits;
use crate::auth::{token, Access, AuthError, AuthInfo, AuthState};
use crate::member::{Applied, Handle, MemberError};
use crate::proto::concordpb::{internal_request::Request as Internal, RequestHeader};

/// How often a write is proposed anew because the auth state changed
/// between its check and its apply (etcd retries without a bound).
const AUTH_RETRIES_MAX: usize = 64;

/// What a request carries to name its sender: a token in the gRPC
/// metadata (`token`, or `authorization` from the JSON gateway), and the
/// common name of the client certificate the TLS handshake verified (only
/// asked for with `--client-cert-auth`).
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    token: Option<String>,
    cn: Option<String>,
}

impl Credentials {
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        let md = request.metadata();
        // A value that is not text is a token nobody was given.
        let token = md
            .get("token")
            .or_else(|| md.get("authorization"))
            .map(|v| v.to_str().unwrap_or_default().to_string());
        Self {
            token,
            cn: cert_cn(request),
        }
    }

    /// The credentials and the message of a request.
    pub fn split<T>(request: tonic::Request<T>) -> (Self, T) {
        let c = Self::of(&request);
        (c, request.into_inner())
    }

    /// The token, to pass on with a request forwarded to another member.
    pub fn token_value(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// The common name of the verified client certificate, if any.
#[cfg(not(madsim))]
fn cert_cn<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    crate::tls::common_name(certs.first()?.as_ref())
}

#[cfg(madsim)]
fn cert_cn<T>(_request: &tonic::Request<T>) -> Option<String> {
    None
}

/// The sender named by the request's token; `None` without a token. An
/// unknown or expired token is `invalid auth token`. A token assigned at
/// a log index this member has not applied yet (the client authenticated
/// through a member ahead of this one) is looked up once this member has
/// caught up with the leader.
pub async fn sender(member: &Handle, cred: &Credentials) -> Result<Option<AuthInfo>, Status> {
    // While auth is off credentials are ignored (etcd 3.5.10+).
    if !member.auth().enabled() {
        return Ok(None);
    }
    let Some(tok) = cred.token.as_deref() else {
        // No token: the certificate's user (etcd's AuthInfoFromTLS).
        return Ok(cred.cn.as_ref().map(|cn| AuthInfo {
            username: cn.clone(),
            revision: member.auth().revision(),
        }));
    };
    for attempt in 0..2 {
        if let Some(info) = member.token_info(tok) {
            return Ok(Some(info));
        }
        match token::token_index(tok) {
            Some(index) if attempt == 0 && index > member.applied_index() => {
                member.read_index().await?;
            }
            _ => break,
        }
    }
    Err(error::INVALID_AUTH_TOKEN.status())
}

/// The header a client's proposal carries.
fn header_of(info: Option<&AuthInfo>) -> RequestHeader {
    info.map(|i| RequestHeader {
        username: i.username.clone(),
        auth_revision: i.revision,
    })
    .unwrap_or_default()
}

/// Proposes a client's request as its sender; the applier checks it.
pub async fn propose(
    member: &Handle,
    cred: &Credentials,
    request: Internal,
) -> Result<Applied, Status> {
    let info = sender(member, cred).await?;
    if info.is_none() {
        // Checked at revision 0: refused if auth is on by the time it applies.
        return Ok(member.propose_as(Some(header_of(None)), request).await?);
    }
    let mut info = info;
    for _ in 0..AUTH_RETRIES_MAX {
        match member
            .propose_as(Some(header_of(info.as_ref())), request.clone())
            .await
        {
            Err(MemberError::Auth(AuthError::AuthOldRevision)) => {
                let again = sender(member, cred).await?;
                // A JWT names the revision it was signed at: the client
                // must authenticate again.
                if again == info {
                    return Err(error::AUTH_OLD_REVISION.status());
                }
                info = again;
            }
            r => return Ok(r?),
        }
    }
    Err(error::AUTH_OLD_REVISION.status())
}

/// A read's view of the sender's permissions (etcd's `doSerialize`).
pub struct ReadCheck {
    info: Option<AuthInfo>,
    state: Arc<AuthState>,
}

impl ReadCheck {
    pub async fn new(member: &Handle, cred: &Credentials) -> Result<Self, Status> {
        let info = sender(member, cred).await?;
        let state = member.auth();
        Ok(Self { info, state })
    }

    pub fn permits(&self) -> Result<Permits<'_>, Status> {
        Ok(self.state.permits(self.info.as_ref())?)
    }

    /// Read permission on a key range.
    pub fn read(&self, key: &[u8], range_end: &[u8]) -> Result<(), Status> {
        Ok(self.permits()?.check(Access::Read, key, range_end)?)
    }

    /// Whether a read answered after this check may go out: the auth state
    /// has not changed since (etcd: else `revision of auth store is old`).
    pub fn still_valid(&self, member: &Handle) -> Result<(), Status> {
        match &self.info {
            Some(i) if i.revision != member.auth().revision() => {
                Err(error::AUTH_OLD_REVISION.status())
            }
            _ => Ok(()),
        }
    }
}

/// The sender must have the root role (etcd's `IsAdminPermitted`).
pub async fn require_admin(member: &Handle, cred: &Credentials) -> Result<(), Status> {
    let state = member.auth();
    if !state.enabled() {
        return Ok(());
    }
    let info = sender(member, cred).await?;
    Ok(member.auth().check_admin(info.as_ref())?)
}
