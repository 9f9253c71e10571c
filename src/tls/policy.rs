//! etcd's TLS policy flags on rustls: `--cipher-suites` (Go's suite names,
//! for TLS 1.2; TLS 1.3's suites are always on, as in Go),
//! `--tls-min-version` and `--tls-max-version` (TLS1.2 or TLS1.3: rustls
//! has no older versions, so TLS1.0 and TLS1.1 are refused by name).

use rustls::crypto::{ring, CryptoProvider};
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

use super::TlsError;

/// Go's names of the TLS 1.2 suites rustls implements.
fn suite(name: &str) -> Option<SupportedCipherSuite> {
    use ring::cipher_suite as cs;
    Some(match name {
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305"
        | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        }
        _ => return None,
    })
}

/// The suites Go knows that rustls does not implement (CBC modes, RSA key
/// exchange, RC4, 3DES): refused with a reason rather than as unknown.
const GO_ONLY: &[&str] = &[
    "TLS_RSA_WITH_RC4_128_SHA",
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA",
    "TLS_RSA_WITH_AES_128_CBC_SHA256",
    "TLS_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA",
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
];

/// One TLS version flag's value.
fn version(flag: &str, v: &str) -> Result<Option<u8>, TlsError> {
    match v {
        "" => Ok(None),
        "TLS1.2" => Ok(Some(2)),
        "TLS1.3" => Ok(Some(3)),
        "TLS1.0" | "TLS1.1" => Err(TlsError::Invalid(format!(
            "--{flag} {v}: concord speaks TLS1.2 and TLS1.3 only"
        ))),
        other => Err(TlsError::Invalid(format!(
            "--{flag}: unexpected TLS version {other:?} (TLS1.2 or TLS1.3)"
        ))),
    }
}

/// The protocol versions and suites of every TLS listener and dialer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    cipher_suites: Vec<String>,
    /// 2 or 3 (TLS 1.2, 1.3).
    min: u8,
    max: u8,
}

impl Policy {
    /// Checks the flags as etcd 3.5 does (and what rustls lacks).
    pub fn new(cipher_suites: &[String], min: &str, max: &str) -> Result<Self, TlsError> {
        let min_v = version("tls-min-version", min)?.unwrap_or(2);
        let max_v = version("tls-max-version", max)?.unwrap_or(3);
        if min_v > max_v {
            return Err(TlsError::Invalid(format!(
                "min version ({min}) is greater than max version ({max})"
            )));
        }
        for name in cipher_suites {
            if suite(name).is_none() {
                return Err(TlsError::Invalid(if GO_ONLY.contains(&name.as_str()) {
                    format!("--cipher-suites: {name} is not supported by concord (only the ECDHE AES-GCM and ChaCha20-Poly1305 suites are)")
                } else {
                    format!("--cipher-suites: unexpected TLS cipher suite {name:?}")
                }));
            }
        }
        if !cipher_suites.is_empty() && min_v == 3 {
            return Err(TlsError::Invalid(
                "cipher suites cannot be configured when only TLS1.3 is enabled".into(),
            ));
        }
        Ok(Self {
            cipher_suites: cipher_suites.to_vec(),
            min: min_v,
            max: max_v,
        })
    }

    /// The crypto provider: ring's, with only the chosen TLS 1.2 suites
    /// (TLS 1.3's all) when suites are given.
    pub fn provider(&self) -> CryptoProvider {
        let mut p = ring::default_provider();
        if !self.cipher_suites.is_empty() {
            let chosen: Vec<SupportedCipherSuite> =
                self.cipher_suites.iter().filter_map(|n| suite(n)).collect();
            p.cipher_suites.retain(|s| {
                s.version() == &rustls::version::TLS13
                    || chosen.iter().any(|c| c.suite() == s.suite())
            });
        }
        p
    }

    pub fn versions(&self) -> Vec<&'static SupportedProtocolVersion> {
        let mut v = Vec::new();
        if self.min <= 3 && self.max >= 3 {
            v.push(&rustls::version::TLS13);
        }
        if self.min <= 2 && self.max >= 2 {
            v.push(&rustls::version::TLS12);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn etcds_flags_are_checked() {
        assert!(Policy::new(&[], "", "").is_ok());
        assert!(Policy::new(&[], "TLS1.3", "").is_ok());
        assert!(Policy::new(&[], "TLS1.3", "TLS1.2").is_err());
        assert!(Policy::new(&[], "TLS1.1", "").is_err());
        assert!(Policy::new(&[], "", "TLS9").is_err());
        let ok = names(&["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"]);
        assert!(Policy::new(&ok, "", "").is_ok());
        assert!(Policy::new(&ok, "TLS1.3", "").is_err());
        assert!(Policy::new(&names(&["TLS_RSA_WITH_AES_128_CBC_SHA"]), "", "").is_err());
        assert!(Policy::new(&names(&["nope"]), "", "").is_err());
    }

    #[test]
    fn only_the_chosen_tls12_suites_remain() {
        let p = Policy::new(&names(&["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]), "", "")
            .expect("policy");
        let provider = p.provider();
        let tls12: Vec<_> = provider
            .cipher_suites
            .iter()
            .filter(|s| s.version() == &rustls::version::TLS12)
            .collect();
        assert_eq!(tls12.len(), 1);
        assert!(provider
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13));
        assert_eq!(
            Policy::new(&[], "TLS1.3", "").expect("policy").versions(),
            vec![&rustls::version::TLS13]
        );
    }
}
