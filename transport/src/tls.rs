//! The cluster's own certificate authority and the TLS configurations built on it.
//!
//! `prism start --head` makes a [`ClusterAuthority`]: an ECDSA P-256 CA that signs one
//! certificate per node and driver ([`Identity`]). Every connection between hosts is mutual
//! TLS 1.3 under that CA. A host without a certificate joins with a [`JoinToken`]: its secret
//! proves the joiner to the head, and the CA fingerprint it carries lets the joiner check the
//! head before it sends the secret (as kubeadm's discovery hash), so no one in the middle can
//! learn the secret or hand out a certificate.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The DNS name every node certificate carries and every client asks for: hosts are known by
/// address, and membership in the cluster (a certificate from its CA) is what is checked.
pub const CLUSTER_SERVER_NAME: &str = "prism.cluster";

/// What went wrong with certificates, keys or tokens.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Making or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file or value could not be read.
    #[error("cannot read {what}: {reason}")]
    Pem {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        reason: String,
    },
    /// rustls refused a configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// A verifier could not be built.
    #[error("TLS verifier: {0}")]
    Verifier(String),
    /// A join token that does not parse.
    #[error("malformed join token: {0}")]
    Token(String),
}

/// The ring provider, TLS 1.3 only (QUIC requires it), offering AES-128-GCM first: it seals
/// 10-15% faster than AES-256-GCM on these hosts (`prism-transfer`'s table), and bulk
/// transfers spend part of a core on it; AES-256-GCM and ChaCha20-Poly1305 stay on offer.
fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::{cipher_suite, default_provider};
    let mut provider = default_provider();
    let first = cipher_suite::TLS13_AES_128_GCM_SHA256;
    provider.cipher_suites.retain(|suite| *suite != first);
    provider.cipher_suites.insert(0, first);
    Arc::new(provider)
}

fn pem_error(what: &'static str) -> impl Fn(rustls::pki_types::pem::Error) -> TlsError {
    move |e| TlsError::Pem {
        what,
        reason: e.to_string(),
    }
}

/// The PEM tag of the CA certificate inside an identity file.
const TRUSTED_CA_TAG: &str = "PRISM CLUSTER CA";

/// SHA-256 of a certificate's DER bytes.
pub fn fingerprint(cert: &CertificateDer<'_>) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, cert.as_ref());
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}

/// The CA's subject: fixed per cluster, so a restarted head can sign again from its key alone.
fn ca_params(cluster: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Prism");
    name.push(DnType::CommonName, format!("Prism cluster CA {cluster}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// The cluster's certificate authority: its key signs every member's certificate.
pub struct ClusterAuthority {
    cluster: String,
    key: KeyPair,
    cert: CertificateDer<'static>,
}

impl fmt::Debug for ClusterAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAuthority")
            .field("cluster", &self.cluster)
            .field("fingerprint", &hex(&fingerprint(&self.cert)))
            .finish_non_exhaustive()
    }
}

impl ClusterAuthority {
    /// A new CA for the cluster named `cluster` (any id; it goes into the CA's name).
    pub fn create(cluster: &str) -> Result<Self, TlsError> {
        let key = KeyPair::generate()?;
        let cert = ca_params(cluster).self_signed(&key)?.der().clone();
        Ok(ClusterAuthority {
            cluster: cluster.to_string(),
            key,
            cert,
        })
    }

    /// The CA as it is kept on the head: `(certificate PEM, key PEM)`.
    pub fn to_pem(&self) -> (String, String) {
        (cert_pem(&self.cert), self.key.serialize_pem())
    }

    /// Loads a CA that [`ClusterAuthority::to_pem`] wrote.
    pub fn from_pem(cluster: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(pem_error("the CA certificate"))?;
        let key = KeyPair::from_pem(key_pem)?;
        Ok(ClusterAuthority {
            cluster: cluster.to_string(),
            key,
            cert,
        })
    }

    /// The CA certificate every member trusts.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// A certificate for a member named `name` (a node or a driver), valid as both TLS server
    /// and client, for [`CLUSTER_SERVER_NAME`].
    pub fn issue(&self, name: &str) -> Result<Identity, TlsError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![CLUSTER_SERVER_NAME.to_string()])?;
        let mut subject = DistinguishedName::new();
        subject.push(DnType::OrganizationName, "Prism");
        subject.push(DnType::CommonName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let issuer = Issuer::new(ca_params(&self.cluster), &self.key);
        let cert = params.signed_by(&key, &issuer)?;
        Ok(Identity {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()),
            ca: self.cert.clone(),
        })
    }
}

fn cert_pem(cert: &CertificateDer<'_>) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", cert.as_ref()))
}

/// A member's certificate chain (its own, then the CA's), its private key, and the CA it
/// trusts.
pub struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
    ca: CertificateDer<'static>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &hex(&fingerprint(&self.chain[0])))
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Self {
        Identity {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
            ca: self.ca.clone(),
        }
    }
}

impl Identity {
    /// The CA this member trusts.
    pub fn ca(&self) -> &CertificateDer<'static> {
        &self.ca
    }

    /// The identity as PEM: the chain's certificates, the key, then the trusted CA.
    pub fn to_pem(&self) -> String {
        let mut blocks: Vec<pem::Pem> = self
            .chain
            .iter()
            .map(|c| pem::Pem::new("CERTIFICATE", c.as_ref()))
            .collect();
        blocks.push(pem::Pem::new("PRIVATE KEY", self.key.secret_pkcs8_der()));
        blocks.push(pem::Pem::new(TRUSTED_CA_TAG, self.ca.as_ref()));
        pem::encode_many(&blocks)
    }

    /// Reads what [`Identity::to_pem`] wrote.
    pub fn from_pem(text: &str) -> Result<Self, TlsError> {
        let bad = |reason: String| TlsError::Pem {
            what: "an identity",
            reason,
        };
        let blocks = pem::parse_many(text).map_err(|e| bad(e.to_string()))?;
        let (mut chain, mut key, mut ca) = (Vec::new(), None, None);
        for block in blocks {
            match block.tag() {
                "CERTIFICATE" => chain.push(CertificateDer::from(block.into_contents())),
                "PRIVATE KEY" => key = Some(PrivatePkcs8KeyDer::from(block.into_contents())),
                TRUSTED_CA_TAG => ca = Some(CertificateDer::from(block.into_contents())),
                other => return Err(bad(format!("unexpected block {other}"))),
            }
        }
        if chain.is_empty() {
            return Err(bad("no certificate".into()));
        }
        Ok(Identity {
            chain,
            key: key.ok_or_else(|| bad("no private key".into()))?,
            ca: ca.ok_or_else(|| bad("no trusted CA certificate".into()))?,
        })
    }

    /// SHA-256 of this member's own certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        fingerprint(&self.chain[0])
    }

    fn roots(&self) -> Result<Arc<RootCertStore>, TlsError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone())?;
        Ok(Arc::new(roots))
    }

    /// The server side of a member: presents this identity; a client certificate from the CA
    /// is checked when offered. Whether one is required is the caller's decision per ALPN
    /// (joiners have none yet): check the connection's peer identity before reading anything.
    pub fn server_config(&self, alpns: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        self.server_config_with(alpns, true)
    }

    /// The server side of a link between members alone: a client without a certificate from
    /// the CA fails the handshake.
    pub fn mutual_server_config(&self, alpns: &[&[u8]]) -> Result<rustls::ServerConfig, TlsError> {
        self.server_config_with(alpns, false)
    }

    fn server_config_with(
        &self,
        alpns: &[&[u8]],
        anonymous: bool,
    ) -> Result<rustls::ServerConfig, TlsError> {
        let builder = WebPkiClientVerifier::builder_with_provider(self.roots()?, provider());
        let builder = if anonymous {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        let verifier = builder
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        config.alpn_protocols = alpns.iter().map(|a| a.to_vec()).collect();
        Ok(config)
    }

    /// The client side of a member: checks the server against the CA and presents this
    /// identity.
    pub fn client_config(&self, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots()?, provider())
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(
                self.chain.clone(),
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

/// What a host without a certificate presents to join: a secret the head checks, and the
/// CA's fingerprint the joiner checks the head against.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    secret: [u8; 32],
    ca_fingerprint: [u8; 32],
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &hex(&self.ca_fingerprint))
            .finish_non_exhaustive()
    }
}

impl JoinToken {
    /// A new random token for the cluster whose CA is `ca`.
    pub fn generate(ca: &CertificateDer<'_>) -> Self {
        use ring::rand::SecureRandom;
        let mut secret = [0u8; 32];
        ring::rand::SystemRandom::new()
            .fill(&mut secret)
            .expect("the system's random source works");
        JoinToken {
            secret,
            ca_fingerprint: fingerprint(ca),
        }
    }

    /// The secret part, as the joiner sends it.
    pub fn secret(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The fingerprint of the CA the head must present.
    pub fn ca_fingerprint(&self) -> &[u8; 32] {
        &self.ca_fingerprint
    }

    /// Whether `offered` is this token's secret (in constant time).
    pub fn accepts(&self, offered: &[u8]) -> bool {
        offered.len() == self.secret.len()
            && offered
                .iter()
                .zip(&self.secret)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// The client side of a joiner: no certificate, and the server must chain to the CA
    /// whose fingerprint the token carries.
    pub fn client_config(&self, alpn: &[u8]) -> Result<rustls::ClientConfig, TlsError> {
        let verifier = PinnedCa {
            fingerprint: self.ca_fingerprint,
            provider: provider(),
        };
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        Ok(config)
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "prism1-{}-{}",
            hex(&self.secret),
            hex(&self.ca_fingerprint)
        )
    }
}

impl FromStr for JoinToken {
    type Err = TlsError;

    fn from_str(s: &str) -> Result<Self, TlsError> {
        let bad = |why: &str| TlsError::Token(why.to_string());
        let rest = s
            .trim()
            .strip_prefix("prism1-")
            .ok_or_else(|| bad("it does not start with prism1-"))?;
        let (secret, ca) = rest
            .split_once('-')
            .ok_or_else(|| bad("it has no CA fingerprint part"))?;
        Ok(JoinToken {
            secret: unhex(secret).ok_or_else(|| bad("the secret is not 64 hex digits"))?,
            ca_fingerprint: unhex(ca)
                .ok_or_else(|| bad("the CA fingerprint is not 64 hex digits"))?,
        })
    }
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in text.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Checks a server against a CA known only by fingerprint: the CA must be in the presented
/// chain, and the chain must verify under it as usual.
#[derive(Debug)]
struct PinnedCa {
    fingerprint: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| fingerprint(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(
                    "the head did not present the CA named by the join token".into(),
                )
            })?;
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_agree_on_aes_128_gcm() {
        let ca = ClusterAuthority::create("test").unwrap();
        let (a, b) = (ca.issue("a").unwrap(), ca.issue("b").unwrap());
        let server = Arc::new(a.server_config(&[b"x"]).unwrap());
        let client = Arc::new(b.client_config(b"x").unwrap());
        let name = rustls::pki_types::ServerName::try_from(CLUSTER_SERVER_NAME).unwrap();
        let mut client = rustls::ClientConnection::new(client, name).unwrap();
        let mut server = rustls::ServerConnection::new(server).unwrap();
        // The handshake in memory: each side's bytes to the other until neither has any.
        for _ in 0..10 {
            let mut bytes = Vec::new();
            client.write_tls(&mut bytes).unwrap();
            server.read_tls(&mut bytes.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut back = Vec::new();
            server.write_tls(&mut back).unwrap();
            client.read_tls(&mut back.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        assert!(!client.is_handshaking() && !server.is_handshaking());
        let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
        assert_eq!(client.negotiated_cipher_suite(), Some(suite));
        assert_eq!(server.negotiated_cipher_suite(), Some(suite));
    }

    #[test]
    fn identities_and_tokens_round_trip_through_text() {
        let ca = ClusterAuthority::create("test").unwrap();
        let id = ca.issue("node-1").unwrap();
        let back = Identity::from_pem(&id.to_pem()).unwrap();
        assert_eq!(back.chain, id.chain);
        assert_eq!(back.key.secret_pkcs8_der(), id.key.secret_pkcs8_der());
        assert_eq!(back.ca(), ca.certificate());
        assert!(
            Identity::from_pem(&ca.to_pem().0).is_err(),
            "a CA alone is no identity"
        );

        let (cert, key) = ca.to_pem();
        let reloaded = ClusterAuthority::from_pem("test", &cert, &key).unwrap();
        assert_eq!(reloaded.certificate(), ca.certificate());
        let later = reloaded.issue("node-2").unwrap();
        assert_eq!(
            later.chain[1],
            *ca.certificate(),
            "signed under the same CA"
        );

        let token = JoinToken::generate(ca.certificate());
        let parsed: JoinToken = token.to_string().parse().unwrap();
        assert_eq!(parsed, token);
        assert!(token.accepts(parsed.secret()));
        assert!(!token.accepts(&[0u8; 32]));
        assert!(!token.accepts(&parsed.secret()[..31]));
        for bad in ["", "prism1-abc", "prism2-00-00", &token.to_string()[..70]] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?} is refused");
        }
    }
}
