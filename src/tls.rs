//! TLS (rustls) for the peer link, the witness link and NBD.
//!
//! Certificates are PEM files: this node's certificate chain and key, and
//! the CA that signs the peer's (and the clients') certificates. On the
//! peer link both sides authenticate: each node's certificate must name the
//! node (a DNS subject alternative name equal to its name in the config),
//! and the CA must have signed it. A node with TLS configured never talks
//! plaintext to its peer. The witness link is the same: the data node
//! dials with its own certificate and expects one naming `[witness] name`
//! ([`Tls::connect`]); the witness takes a certificate naming either data
//! node ([`Tls::accept_one_of`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the PEM files are (`[net] tls_cert`, `tls_key`, `tls_ca`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A byte stream, plain or TLS, as the link and the NBD server use it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A boxed stream.
pub type BoxStream = Box<dyn Stream>;

/// The loaded TLS material: a server and a client configuration.
#[derive(Clone)]
pub struct Tls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    /// The server side without client certificates (NBD clients may not have one).
    pub server_no_client_auth: Arc<ServerConfig>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

fn err(path: &Path, what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: {what}: {e}", path.display()))
}

fn certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let data = std::fs::read(path).map_err(|e| err(path, "cannot read", e))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&data).collect::<Result<_, _>>().map_err(|e| err(path, "bad PEM", e))?;
    if certs.is_empty() {
        return Err(err(path, "no certificate", "the file holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn key(path: &Path) -> io::Result<PrivateKeyDer<'static>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| err(path, "cannot read", e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(err(path, "private key readable by others", format!("mode {:o}; chmod 600 it", meta.mode() & 0o777)));
    }
    let data = std::fs::read(path).map_err(|e| err(path, "cannot read", e))?;
    PrivateKeyDer::from_pem_slice(&data).map_err(|e| match e {
        pem::Error::NoItemsFound => err(path, "no private key", "the file holds no PRIVATE KEY block"),
        e => err(path, "bad PEM", e),
    })
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl Tls {
    /// Loads and checks the PEM files.
    pub fn load(files: &TlsFiles) -> io::Result<Tls> {
        let chain = certs(&files.cert)?;
        let key = key(&files.key)?;
        let mut roots = RootCertStore::empty();
        for c in certs(&files.ca)? {
            roots.add(c).map_err(|e| err(&files.ca, "bad CA certificate", e))?;
        }
        let roots = Arc::new(roots);
        let tls_err = |what: &str, e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"));
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", files.ca.display())))?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls_err(&format!("{} / {}", files.cert.display(), files.key.display()), e))?;
        let server_no_client_auth = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("TLS versions", e))?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| tls_err(&format!("{} / {}", files.cert.display(), files.key.display()), e))?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_err("TLS versions", e))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| tls_err(&format!("{} / {}", files.cert.display(), files.key.display()), e))?;
        Ok(Tls { server: Arc::new(server), client: Arc::new(client), server_no_client_auth: Arc::new(server_no_client_auth) })
    }

    /// Connects as a client to the peer named `peer` (its certificate must name it).
    pub async fn connect<S: Stream + 'static>(&self, stream: S, peer: &str) -> io::Result<BoxStream> {
        let name = ServerName::try_from(peer.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("peer name `{peer}`: {e}")))?;
        let s = tokio_rustls::TlsConnector::from(self.client.clone()).connect(name, stream).await?;
        Ok(Box::new(s))
    }

    /// Accepts a client that must present a certificate naming `peer`.
    pub async fn accept_peer<S: Stream + 'static>(&self, stream: S, peer: &str) -> io::Result<BoxStream> {
        Ok(self.accept_one_of(stream, &[peer]).await?.0)
    }

    /// Accepts a client that must present a certificate naming one of
    /// `names` (the witness takes either data node); returns the stream and
    /// the indices (in `names`) of every name its certificate holds.
    pub async fn accept_one_of<S: Stream + 'static>(&self, stream: S, names: &[&str]) -> io::Result<(BoxStream, Vec<usize>)> {
        let denied = |m: String| io::Error::new(io::ErrorKind::PermissionDenied, m);
        let s = tokio_rustls::TlsAcceptor::from(self.server.clone()).accept(stream).await?;
        let (_, conn) = s.get_ref();
        let cert = conn.peer_certificates().and_then(|c| c.first()).ok_or_else(|| denied("the peer sent no certificate".into()))?;
        let ee = webpki::EndEntityCert::try_from(cert).map_err(|e| denied(format!("peer certificate: {e:?}")))?;
        let mut fits = Vec::new();
        for (i, n) in names.iter().enumerate() {
            let name = ServerName::try_from(n.to_string()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("peer name `{n}`: {e}")))?;
            if ee.verify_is_valid_for_subject_name(&name).is_ok() {
                fits.push(i);
            }
        }
        if !fits.is_empty() {
            return Ok((Box::new(s), fits));
        }
        let want = names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ");
        Err(denied(format!("the peer's certificate does not name {want}")))
    }

    /// Accepts an NBD client (client certificates verified when `require_client_cert`).
    pub async fn accept_client<S: Stream + 'static>(&self, stream: S, require_client_cert: bool) -> io::Result<BoxStream> {
        let cfg = if require_client_cert { self.server.clone() } else { self.server_no_client_auth.clone() };
        let s = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await?;
        Ok(Box::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    #[test]
    fn pem_files_parse_and_bad_ones_are_named() {
        let d = tempfile::tempdir().unwrap();
        let kp = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["alpha".into()]).unwrap().self_signed(&kp).unwrap();
        // Text around the blocks (as openssl writes) is skipped.
        let c = write(d.path(), "c.pem", &format!("Bag Attributes\n{}\nsome trailer\n", cert.pem()));
        let k = write(d.path(), "k.pem", &kp.serialize_pem());
        assert_eq!(certs(&c).unwrap().len(), 1);
        assert!(matches!(key(&k).unwrap(), PrivateKeyDer::Pkcs8(_)));
        // A certificate where the key should be, and the reverse.
        let e = key(&c).unwrap_err().to_string();
        assert!(e.contains("no private key"), "{e}");
        let e = certs(&k).unwrap_err().to_string();
        assert!(e.contains("no certificate"), "{e}");
        // A damaged block.
        let bad = write(d.path(), "bad.pem", "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
        let e = certs(&bad).unwrap_err().to_string();
        assert!(e.contains("bad PEM") && e.contains("bad.pem"), "{e}");
    }
}
