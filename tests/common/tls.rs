//! Test certificates: a CA and leaf certificates naming a node, written as
//! the PEM files `[net] tls_ca`, `tls_cert` and `tls_key` point at.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

pub struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A CA named `name`, its certificate written to `{dir}/{name}.pem`.
pub fn ca(dir: &Path, name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    Ca { cert, key }
}

/// Writes `{file}.crt` and `{file}.key` (0600) for a certificate naming `san`
/// (and localhost / 127.0.0.1, for NBD clients).
pub fn leaf(dir: &Path, ca: &Ca, san: &str, file: &str) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![san.to_string(), "localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, san);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join(format!("{file}.crt")), cert.pem()).unwrap();
    let k = dir.join(format!("{file}.key"));
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Rewrites the pair's file for TLS: `[net] tls_ca = {dir}/ca.pem`, and
/// each node's `tls_cert` / `tls_key` = `{dir}/NAME.crt|key`.
pub fn tls_config(p: &super::Pair) {
    let d = p.dir.path();
    let text = std::fs::read_to_string(&p.config).unwrap();
    let mut text = text.replace("[net]\n", &format!("[net]\ntls_ca = \"{}/ca.pem\"\n", d.display()));
    for n in ["alpha", "beta"] {
        text = text.replace(&format!("[nodes.{n}]\n"), &format!("[nodes.{n}]\ntls_cert = \"{0}/{n}.crt\"\ntls_key = \"{0}/{n}.key\"\n", d.display()));
    }
    std::fs::write(&p.config, text).unwrap();
}

/// The first flight of a TLS client dialing `name` (its ClientHello): what
/// a stranger sends before it stalls in the middle of a handshake.
pub fn client_hello(name: &str) -> Vec<u8> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut c = rustls::ClientConnection::new(std::sync::Arc::new(cfg), server).unwrap();
    let mut out = Vec::new();
    c.write_tls(&mut out).unwrap();
    assert!(out.len() > 5 && out[0] == 0x16, "not a TLS handshake record: {out:?}");
    out
}
