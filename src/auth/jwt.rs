//! etcd's JWT tokens (`--auth-token jwt,...`): signed claims `username`,
//! `revision` (the auth revision at Authenticate) and `exp` (now + ttl);
//! any member with the public key (or the HS secret) verifies them, none
//! remembers them. A member with only a public key verifies but cannot
//! sign (`Authenticate` there fails as etcd's verify-only provider does).

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{AuthError, AuthInfo};

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    exp: Option<u64>,
}

pub struct JwtTokens {
    alg: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for JwtTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtTokens")
            .field("alg", &self.alg)
            .field("signs", &self.encoding.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Why the JWT keys could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("--auth-token: {0}")]
pub struct JwtError(String);

fn read(path: &Path) -> Result<Vec<u8>, JwtError> {
    std::fs::read(path).map_err(|e| JwtError(format!("cannot read {}: {e}", path.display())))
}

/// The public key of a PEM certificate, as the DER the verifier takes
/// (PKCS#1 for RSA, the point for EC).
fn cert_public_key(pem: &[u8]) -> Result<Option<Vec<u8>>, JwtError> {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem) else {
        return Ok(None);
    };
    if pem.label != "CERTIFICATE" {
        return Ok(None);
    }
    let cert = pem
        .parse_x509()
        .map_err(|e| JwtError(format!("pub-key certificate: {e}")))?;
    Ok(Some(cert.public_key().subject_public_key.data.to_vec()))
}

impl JwtTokens {
    /// Loads the keys named by the options.
    pub fn load(
        pub_key: Option<&Path>,
        priv_key: Option<&Path>,
        sign_method: &str,
        ttl: Duration,
    ) -> Result<Self, JwtError> {
        let alg: Algorithm = sign_method
            .parse()
            .map_err(|_| JwtError(format!("unknown sign-method {sign_method}")))?;
        let bad = |what: &str, e: jsonwebtoken::errors::Error| JwtError(format!("{what}: {e}"));
        let (encoding, decoding) = match alg {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let secret = read(priv_key.ok_or_else(|| JwtError("HS needs priv-key".into()))?)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            _ => {
                let rsa = !matches!(alg, Algorithm::ES256 | Algorithm::ES384);
                let public =
                    read(pub_key.ok_or_else(|| JwtError(format!("{sign_method} needs pub-key")))?)?;
                let decoding = match (cert_public_key(&public)?, rsa) {
                    (Some(der), true) => DecodingKey::from_rsa_der(&der),
                    (Some(der), false) => DecodingKey::from_ec_der(&der),
                    (None, true) => {
                        DecodingKey::from_rsa_pem(&public).map_err(|e| bad("pub-key", e))?
                    }
                    (None, false) => {
                        DecodingKey::from_ec_pem(&public).map_err(|e| bad("pub-key", e))?
                    }
                };
                let encoding = match priv_key {
                    None => None,
                    Some(p) => {
                        let private = read(p)?;
                        Some(if rsa {
                            EncodingKey::from_rsa_pem(&private).map_err(|e| bad("priv-key", e))?
                        } else {
                            EncodingKey::from_ec_pem(&private)
                                .map_err(|e| bad("priv-key (PKCS#8 PEM)", e))?
                        })
                    }
                };
                (encoding, decoding)
            }
        };
        let mut validation = Validation::new(alg);
        // As jwt-go in etcd: `exp` is checked when present, without leeway.
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_exp = true;
        let t = Self {
            alg,
            encoding,
            decoding,
            validation,
            ttl,
        };
        // A key pair that does not match would make tokens nobody accepts.
        if t.encoding.is_some() {
            let probe = t
                .sign("probe", 1)
                .map_err(|e| JwtError(format!("signing a token: {e}")))?;
            if t.info(&probe).is_none() {
                return Err(JwtError("priv-key and pub-key do not match".into()));
            }
        }
        Ok(t)
    }

    /// A signed token for `user` at auth `revision`; `now` is Unix time.
    fn assign(&self, user: &str, revision: u64, now: Duration) -> Result<String, JwtError> {
        let key = self
            .encoding
            .as_ref()
            .ok_or_else(|| JwtError("verify only".into()))?;
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: Some((now + self.ttl).as_secs()),
        };
        jsonwebtoken::encode(&Header::new(self.alg), &claims, key)
            .map_err(|e| JwtError(format!("signing a token: {e}")))
    }

    /// Signs a token now (wall clock, as etcd).
    pub fn sign(&self, user: &str, revision: u64) -> Result<String, AuthError> {
        if self.encoding.is_none() {
            return Err(AuthError::VerifyOnly);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.assign(user, revision, now).map_err(|e| {
            tracing::error!(error = %e, "could not sign an auth token");
            AuthError::AuthFailed
        })
    }

    /// The sender a valid, unexpired token names.
    pub fn info(&self, token: &str) -> Option<AuthInfo> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).ok()?;
        Some(AuthInfo {
            username: data.claims.username,
            revision: data.claims.revision,
        })
    }
}
