//! Client certificate verification on the client URLs: webpki's, plus the
//! one case Go's crypto/tls accepts and webpki does not: a client that
//! presents one of the trusted CA certificates itself (a self-signed
//! certificate that is both the CA and the client's identity, as etcd's
//! `CommonName-root` fixture is). The handshake still proves the client
//! holds that certificate's key, and the certificate must be within its
//! validity period.
//!
//! Then etcd's restrictions: `--peer-cert-allowed-cn` (the certificate's
//! common name is one of them) and `--peer-cert-allowed-hostname` /
//! `--client-cert-allowed-hostname` (the certificate is valid for one of
//! the names, by its DNS or IP subject alternative names, as Go's
//! `VerifyHostname`).

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

#[derive(Debug)]
pub struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    /// The trusted CA certificates, as given.
    anchors: Vec<CertificateDer<'static>>,
    /// Common names allowed (none: any).
    allowed_cn: Vec<String>,
    /// Host names one of which the certificate must be valid for (none:
    /// any).
    allowed_hostnames: Vec<String>,
}

impl ClientVerifier {
    pub fn new(
        inner: Arc<dyn ClientCertVerifier>,
        anchors: Vec<CertificateDer<'static>>,
        allowed_cn: Vec<String>,
        allowed_hostnames: Vec<String>,
    ) -> Self {
        Self {
            inner,
            anchors,
            allowed_cn,
            allowed_hostnames,
        }
    }

    /// etcd's allowed CN and hostname checks on a verified certificate.
    fn check_allowed(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        if self.allowed_cn.is_empty() && self.allowed_hostnames.is_empty() {
            return Ok(());
        }
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        if !self.allowed_cn.is_empty() {
            let cn = super::subject_common_name(&parsed);
            if !self.allowed_cn.iter().any(|a| a == cn) {
                return Err(rustls::Error::General(format!(
                    "CommonName authentication failed (got {cn:?})"
                )));
            }
        }
        if !self.allowed_hostnames.is_empty()
            && !self.allowed_hostnames.iter().any(|h| valid_for(&parsed, h))
        {
            return Err(rustls::Error::General(
                "client certificate authentication failed: not valid for an allowed hostname"
                    .into(),
            ));
        }
        Ok(())
    }
    /// A trusted certificate presented as the client's own, in its
    /// validity period.
    fn is_trusted_anchor(&self, cert: &CertificateDer<'_>, now: UnixTime) -> bool {
        if !self.anchors.iter().any(|a| a.as_ref() == cert.as_ref()) {
            return false;
        }
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
            return false;
        };
        let now = now.as_secs() as i64;
        let v = parsed.validity();
        v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        match self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            Ok(_) => {}
            Err(_) if self.is_trusted_anchor(end_entity, now) => {}
            Err(e) => return Err(e),
        }
        self.check_allowed(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Go's `VerifyHostname`: an IP against the IP addresses, a name against
/// the DNS names (a leading `*.` matches one label), case-insensitively.
fn valid_for(cert: &x509_parser::certificate::X509Certificate<'_>, host: &str) -> bool {
    use x509_parser::extensions::GeneralName;
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    let ip: Option<std::net::IpAddr> = host.parse().ok();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    san.value.general_names.iter().any(|n| match (n, ip) {
        (GeneralName::IPAddress(bytes), Some(ip)) => match ip {
            std::net::IpAddr::V4(v4) => *bytes == v4.octets(),
            std::net::IpAddr::V6(v6) => *bytes == v6.octets(),
        },
        (GeneralName::DNSName(name), None) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => host
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => name == host,
            }
        }
        _ => false,
    })
}
