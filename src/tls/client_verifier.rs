//! Client certificate verification on the client URLs: webpki's, plus the
//! one case Go's crypto/tls accepts and webpki does not: a client that
//! presents one of the trusted CA certificates itself (a self-signed
//! certificate that is both the CA and the client's identity, as etcd's
//! `CommonName-root` fixture is). The handshake still proves the client
//! holds that certificate's key, and the certificate must be within its
//! validity period.

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
}

impl ClientVerifier {
    pub fn new(inner: Arc<dyn ClientCertVerifier>, anchors: Vec<CertificateDer<'static>>) -> Self {
        Self { inner, anchors }
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
            Ok(v) => Ok(v),
            Err(_) if self.is_trusted_anchor(end_entity, now) => {
                Ok(ClientCertVerified::assertion())
            }
            Err(e) => Err(e),
        }
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
