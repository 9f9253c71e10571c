//! tls: etcd's TLS setups on rustls. A listener kind (peer or client) gets
//! its certificate from files (`--peer-cert-file`, `--peer-key-file`,
//! `--peer-trusted-ca-file`) or generates a self-signed one at start
//! (`--peer-auto-tls` / `--auto-tls`, kept in `<data-dir>/fixtures/peer`
//! or `fixtures/client` as etcd does).
//!
//! The server side is our own rustls acceptor (`tls_incoming`) for peer,
//! client and metrics listeners (HTTP/1.1 as well as h2 in ALPN), so that
//! etcd's TLS policy (`policy`: `--cipher-suites`, `--tls-min-version`,
//! `--tls-max-version`), CRLs and client certificate checks apply to all. The client side is our
//! own rustls configuration, because etcd's clients of a self-signed peer
//! skip certificate verification (Go's `InsecureSkipVerify`), which tonic's
//! client TLS cannot express; a trusted CA, when given, is always verified.
//! A member presents its certificate as a client certificate too, so
//! `--peer-client-cert-auth` works between members.
//!
//! `client_verifier` accepts what Go accepts and webpki does not: a client
//! presenting a trusted CA certificate as its own.
//!
//! Not under madsim: simulated members talk plain http.

mod client_verifier;
pub mod policy;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::config::TlsFlags;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Pem { path: PathBuf, why: String },
    #[error("{0}")]
    Invalid(String),
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(String),
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A member's TLS identity for one listener kind, as PEM texts.
#[derive(Clone)]
pub struct TlsIdentity {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    trusted_ca_pem: Option<Vec<u8>>,
    client_cert_auth: bool,
    /// `--cipher-suites`, `--tls-min-version`, `--tls-max-version`.
    policy: policy::Policy,
    /// `--peer-cert-allowed-cn`, `--peer-cert-allowed-hostname`,
    /// `--client-cert-allowed-hostname`: what a verified client
    /// certificate must also name.
    allowed_cn: Vec<String>,
    allowed_hostnames: Vec<String>,
    /// Revoked certificates (`--client-crl-file`), DER.
    crls: Vec<rustls::pki_types::CertificateRevocationListDer<'static>>,
    /// Generated at start: its clients do not verify the other side.
    self_signed: bool,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("trusted_ca", &self.trusted_ca_pem.is_some())
            .field("client_cert_auth", &self.client_cert_auth)
            .field("self_signed", &self.self_signed)
            .finish_non_exhaustive()
    }
}

/// Certificate revocation lists from a DER file (etcd's fixtures) or
/// PEM blocks.
fn parse_crls(
    data: &[u8],
    path: &Path,
) -> Result<Vec<rustls::pki_types::CertificateRevocationListDer<'static>>, TlsError> {
    use rustls::pki_types::CertificateRevocationListDer as Crl;
    if !data.starts_with(b"-----BEGIN") {
        return Ok(vec![Crl::from(data.to_vec())]);
    }
    let crls = Crl::pem_slice_iter(data)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("{}: {e}", path.display())))?;
    if crls.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate revocation list",
            path.display()
        )));
    }
    Ok(crls)
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

impl TlsIdentity {
    /// The identity `flags` describe, or `None` when they name no
    /// certificate. Certificate files win over auto TLS (as in etcd);
    /// auto TLS generates a certificate for `hosts` in `self_cert_dir`
    /// unless one is there already. `kind` is the flags' prefix: `peer-`
    /// for peers, empty for clients.
    pub fn load(
        kind: &str,
        flags: &TlsFlags,
        self_cert_dir: &Path,
        hosts: &[String],
    ) -> Result<Option<TlsIdentity>, TlsError> {
        let (cert_path, key_path, self_signed) = match (&flags.cert_file, &flags.key_file) {
            (Some(c), Some(k)) => (c.clone(), k.clone(), false),
            (None, None) if flags.auto_tls => {
                let (c, k) =
                    self_signed_files(self_cert_dir, hosts, flags.self_signed_cert_validity_years)?;
                (c, k, true)
            }
            (None, None) => {
                if flags.trusted_ca_file.is_some() || flags.client_cert_auth {
                    return Err(TlsError::Invalid(format!(
                        "--{kind}trusted-ca-file and --{kind}client-cert-auth need --{kind}cert-file and --{kind}key-file (or --{kind}auto-tls)"
                    )));
                }
                return Ok(None);
            }
            _ => {
                return Err(TlsError::Invalid(format!(
                    "--{kind}cert-file and --{kind}key-file must be given together"
                )))
            }
        };
        let trusted_ca_pem = match &flags.trusted_ca_file {
            Some(p) => Some(read(p)?),
            None => None,
        };
        if flags.client_cert_auth && trusted_ca_pem.is_none() {
            return Err(TlsError::Invalid(format!(
                "--{kind}client-cert-auth needs --{kind}trusted-ca-file to verify client certificates"
            )));
        }
        let crls = match &flags.crl_file {
            Some(p) => parse_crls(&read(p)?, p)?,
            None => Vec::new(),
        };
        let identity = TlsIdentity {
            cert_pem: read(&cert_path)?,
            key_pem: read(&key_path)?,
            trusted_ca_pem,
            client_cert_auth: flags.client_cert_auth,
            policy: policy::Policy::new(
                &flags.cipher_suites,
                &flags.tls_min_version,
                &flags.tls_max_version,
            )?,
            allowed_cn: flags.allowed_cn.clone(),
            allowed_hostnames: flags.allowed_hostnames.clone(),
            crls,
            self_signed,
        };
        // Parse now, so a bad file fails the start rather than a connection.
        identity.certs(&cert_path)?;
        identity.key(&key_path)?;
        if let (Some(ca), Some(path)) = (&identity.trusted_ca_pem, &flags.trusted_ca_file) {
            parse_certs(ca, path)?;
        }
        Ok(Some(identity))
    }

    fn certs(&self, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        parse_certs(&self.cert_pem, path)
    }

    fn key(&self, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_slice(&self.key_pem).map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            why: format!("no usable private key: {e}"),
        })
    }

    /// The server side as a rustls configuration, for listeners that
    /// serve HTTP/1.1 next to gRPC (tonic's own TLS offers only h2 in
    /// ALPN, so a client that offers only http/1.1 would fail the
    /// handshake): both protocols in ALPN; client certificates required
    /// and verified against the trusted CA with client-cert-auth.
    pub fn rustls_server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(self.policy.provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.policy.versions())?;
        let builder = match (self.client_cert_auth, &self.trusted_ca_pem) {
            (true, Some(ca)) => {
                let mut roots = rustls::RootCertStore::empty();
                let anchors = parse_certs(ca, Path::new("trusted CA"))?;
                for cert in &anchors {
                    roots.add(cert.clone())?;
                }
                let mut verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                );
                if !self.crls.is_empty() {
                    // As etcd's checkCRL: a certificate whose serial a CRL
                    // lists is refused; one no CRL speaks of is not.
                    verifier = verifier
                        .with_crls(self.crls.iter().cloned())
                        .only_check_end_entity_revocation()
                        .allow_unknown_revocation_status();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| TlsError::Invalid(format!("client certificate verifier: {e}")))?;
                builder.with_client_cert_verifier(Arc::new(client_verifier::ClientVerifier::new(
                    verifier,
                    anchors,
                    self.allowed_cn.clone(),
                    self.allowed_hostnames.clone(),
                )))
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(
            self.certs(Path::new("certificate"))?,
            self.key(Path::new("key"))?,
        )?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// The client side: verifies servers against the trusted CA (or, for a
    /// self-signed identity without one, checks only the handshake
    /// signatures, as etcd does), and presents this identity.
    pub fn client_config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let provider = Arc::new(self.policy.provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.policy.versions())?;
        let builder = match (&self.trusted_ca_pem, self.self_signed) {
            (Some(ca), _) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in parse_certs(ca, Path::new("trusted CA"))? {
                    roots.add(cert)?;
                }
                builder.with_root_certificates(roots)
            }
            (None, true) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerify(
                    provider.signature_verification_algorithms,
                ))),
            (None, false) => {
                return Err(TlsError::Invalid(
                    "a certificate without a trusted CA file: concord verifies the other side against the trusted CA file only (system roots are not used)".into(),
                ))
            }
        };
        let mut config = builder.with_client_auth_cert(
            self.certs(Path::new("certificate"))?,
            self.key(Path::new("key"))?,
        )?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// A certificate subject's first common name ("" without one, as Go's
/// `Subject.CommonName`).
pub fn subject_common_name<'a>(cert: &'a x509_parser::certificate::X509Certificate<'_>) -> &'a str {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or_default()
}

/// The common name of a DER certificate; `None` if it does not parse.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(subject_common_name(&cert).to_string())
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Handshakes in progress at once per listener; beyond them, connections
/// wait in the kernel's backlog.
const HANDSHAKES_MAX: usize = 256;
/// The pause after a failed accept (out of file descriptors, say), so
/// that the loop does not spin.
const ACCEPT_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

/// The TLS connections of `listener` (Nagle off), each handshake in its
/// own task so that a slow or silent client delays no one else, at most
/// `HANDSHAKES_MAX` at once; failed handshakes are logged and dropped.
pub fn tls_incoming(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<
    Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a client connection failed");
                        tokio::time::sleep(ACCEPT_RETRY).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "rejected connection: TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "rejected connection: TLS handshake timed out")
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// The v3 discovery registry client's TLS, as etcd's clientv3 builds it:
/// with a CA, certificate or key file, TLS with them (system roots without
/// a CA file); else TLS with the system roots for https endpoints, or
/// unless `--discovery-insecure-transport` (the default); and
/// `--discovery-insecure-skip-tls-verify` skips verifying the registry's
/// certificate (TLS on even without files). `None`: plain http.
pub fn discovery_client_config(
    d: &crate::config::V3Discovery,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let files = d.cacert.is_some() || d.cert.is_some() || d.key.is_some();
    // An https endpoint is TLS whatever the flags say: never a downgrade.
    let https = d.endpoints.iter().any(|e| e.starts_with("https://"));
    if !files && d.insecure_transport && !d.insecure_skip_tls_verify && !https {
        return Ok(None);
    }
    let provider = Arc::new(ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = if d.insecure_skip_tls_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SkipVerify(
                provider.signature_verification_algorithms,
            )))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &d.cacert {
            Some(path) => {
                for cert in parse_certs(&read(path)?, path)? {
                    roots.add(cert)?;
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    // A system certificate rustls cannot use is skipped.
                    let _ = roots.add(cert);
                }
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = match (&d.cert, &d.key) {
        (Some(cert), Some(key)) => {
            let certs = parse_certs(&read(cert)?, cert)?;
            let key_pem = read(key)?;
            let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
                path: key.clone(),
                why: e.to_string(),
            })?;
            builder.with_client_auth_cert(certs, key)?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err(TlsError::Invalid(
                "--discovery-cert and --discovery-key go together".into(),
            ))
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Some(Arc::new(config)))
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_path_buf(),
            why: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// etcd's `transport.SelfCert`: an ECDSA P-256 certificate for `hosts`
/// (IP addresses as IP SANs), organization "etcd", valid `years` years,
/// stored as `cert.pem` and `key.pem` (0600) in `dir`, reused when both
/// exist.
fn self_signed_files(
    dir: &Path,
    hosts: &[String],
    years: u32,
) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut sans: Vec<String> = hosts.to_vec();
    sans.sort();
    sans.dedup();
    let mut params = rcgen::CertificateParams::new(sans).map_err(generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "etcd");
    let now = rcgen::date_time_ymd(1970, 1, 1)
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
    // A positive serial number: Go (etcdctl, clientv3) refuses to parse a
    // certificate with a negative one, even when it skips verification.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    params.serial_number = Some(rcgen::SerialNumber::from((nanos & (u64::MAX >> 1)).max(1)));
    params.not_before = now;
    params.not_after = now + std::time::Duration::from_secs(u64::from(years.max(1)) * 365 * 86400);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyEncipherment,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(generate)?;
    let cert = params.self_signed(&key).map_err(generate)?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    tracing::info!(cert = %cert_path.display(), hosts = ?hosts, "generated a self-signed certificate");
    Ok((cert_path, key_path))
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Accepts any server certificate but still checks that the server holds
/// its key (the handshake signatures): etcd's clients of self-signed peers.
#[derive(Debug)]
struct SkipVerify(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for SkipVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// Connects to `https://host:port` with `config`: TCP (Nagle off), then the
/// TLS handshake naming `host`.
pub async fn connect(
    config: Arc<rustls::ClientConfig>,
    uri: &tonic::transport::Uri,
    server_name: Option<&str>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, std::io::Error> {
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let host = uri.host().ok_or_else(|| invalid("no host in URL"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().ok_or_else(|| invalid("no port in URL"))?;
    let tcp = tokio::net::TcpStream::connect((host, port)).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(server_name.unwrap_or(host).to_string())
        .map_err(|_| invalid("bad host name"))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_tls_generates_once_and_reuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let flags = TlsFlags {
            auto_tls: true,
            self_signed_cert_validity_years: 1,
            ..TlsFlags::default()
        };
        let hosts = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        let a = TlsIdentity::load("peer-", &flags, dir.path(), &hosts)
            .expect("load")
            .expect("identity");
        assert!(a.self_signed);
        let b = TlsIdentity::load("peer-", &flags, dir.path(), &hosts)
            .expect("load")
            .expect("identity");
        assert_eq!(
            a.cert_pem, b.cert_pem,
            "the generated certificate is reused"
        );
        a.client_config().expect("client config");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("key.pem"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn bad_flag_combinations_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let load = |f: TlsFlags| TlsIdentity::load("peer-", &f, dir.path(), &[]);
        assert!(matches!(load(TlsFlags::default()), Ok(None)));
        let only_cert = TlsFlags {
            cert_file: Some(dir.path().join("c.pem")),
            ..TlsFlags::default()
        };
        let e = load(only_cert).expect_err("half a pair");
        assert!(e.to_string().contains("must be given together"), "{e}");
        let auth_no_ca = TlsFlags {
            auto_tls: true,
            client_cert_auth: true,
            ..TlsFlags::default()
        };
        let e = load(auth_no_ca).expect_err("no CA");
        assert!(e.to_string().contains("--peer-trusted-ca-file"), "{e}");
        let missing = TlsFlags {
            cert_file: Some(dir.path().join("nope.pem")),
            key_file: Some(dir.path().join("nope.key")),
            ..TlsFlags::default()
        };
        let e = load(missing).expect_err("missing file");
        assert!(e.to_string().contains("nope.pem"), "{e}");
        std::fs::write(dir.path().join("junk.pem"), b"not pem").expect("write");
        let junk = TlsFlags {
            cert_file: Some(dir.path().join("junk.pem")),
            key_file: Some(dir.path().join("junk.pem")),
            ..TlsFlags::default()
        };
        let e = load(junk).expect_err("junk");
        assert!(e.to_string().contains("junk.pem"), "{e}");
    }
}
