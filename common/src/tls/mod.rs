//! Mutual TLS for every HTTP hop: the agent's certificate, key and CA read from PEM
//! files, the rustls configs for serving (a client certificate from the CA required) and
//! for calling (ours presented, the peer's checked for its role), and a reload that
//! swaps the files in place (SIGHUP) without dropping open connections.
//!
//! Roles are names in the certificate: `server.<region>.orch`, `client.<region>.orch`
//! and `cli.<region>.orch`. A client calling a server checks that the server's
//! certificate names the server role, whatever address it dialed, so a client
//! certificate cannot stand in for a server; servers check the client role in turn
//! before they relay to a client.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

pub mod issue;

pub use rustls::{ClientConfig, ServerConfig};

/// What a certificate lets its holder be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// A server: serves the API and the client-facing routes, relays to clients.
    Server,
    /// A client node: registers, heartbeats, runs allocations, serves their logs/exec.
    Client,
    /// A person or script with the CLI: calls agents, serves nothing.
    Cli,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Server, Role::Client, Role::Cli];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
            Role::Cli => "cli",
        }
    }

    /// The DNS name a certificate of this role carries: `server.global.orch`.
    pub fn name_in(self, region: &str) -> String {
        format!("{}.{region}.orch", self.as_str())
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {what} {path}: {message}")]
    File {
        what: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

/// The files an agent (all three) or the CLI (the CA, and a certificate when agents
/// verify their callers) is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA that signed every agent's certificate (PEM).
    pub ca_file: PathBuf,
    /// This agent's certificate (PEM; the chain up to, not including, the CA) and its
    /// private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// What the files hold, parsed and checked.
struct Material {
    roots: Arc<RootCertStore>,
    key: Option<Arc<CertifiedKey>>,
    server_verifier: Arc<WebPkiServerVerifier>,
}

/// The crypto every config here uses. ring, not rustls' default aws-lc-rs: it builds
/// without cmake or AWS-LC's large C library, at the price of no post-quantum key
/// exchange (rustls deprecates it for that reason since 0.23.48).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_files(files: &TlsFiles) -> Result<Material, TlsError> {
    let file_error = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |e: rustls_pki_types::pem::Error| TlsError::File {
            what,
            path,
            message: e.to_string(),
        }
    };
    let mut roots = RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(&files.ca_file)
        .map_err(file_error("ca_file", &files.ca_file))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_error("ca_file", &files.ca_file))?;
    if cas.is_empty() {
        return Err(TlsError::File {
            what: "ca_file",
            path: files.ca_file.clone(),
            message: "no certificate in it".into(),
        });
    }
    for ca in cas {
        roots.add(ca).map_err(|e| TlsError::File {
            what: "ca_file",
            path: files.ca_file.clone(),
            message: e.to_string(),
        })?;
    }
    let provider = provider();
    let key = match &files.identity {
        None => None,
        Some((cert_file, key_file)) => {
            let chain = CertificateDer::pem_file_iter(cert_file)
                .map_err(file_error("cert_file", cert_file))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(file_error("cert_file", cert_file))?;
            if chain.is_empty() {
                return Err(TlsError::File {
                    what: "cert_file",
                    path: cert_file.clone(),
                    message: "no certificate in it".into(),
                });
            }
            let private =
                PrivateKeyDer::from_pem_file(key_file).map_err(file_error("key_file", key_file))?;
            let key =
                CertifiedKey::from_der(chain, private, &provider).map_err(|e| TlsError::File {
                    what: "key_file",
                    path: key_file.clone(),
                    message: format!("does not go with cert_file: {e}"),
                })?;
            Some(Arc::new(key))
        }
    };
    let roots = Arc::new(roots);
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider)
        .build()
        .map_err(|e| TlsError::Config(format!("ca_file: {e}")))?;
    Ok(Material {
        roots,
        key,
        server_verifier,
    })
}

/// One agent's (or the CLI's) TLS identity, shared by everything that serves or calls
/// over HTTPS, and reloaded in place.
pub struct Tls {
    files: TlsFiles,
    region: String,
    verify_clients: bool,
    current: RwLock<Arc<Material>>,
    /// `None` without an identity (the CLI with only a CA), which serves nothing.
    serving: RwLock<Option<Arc<ServerConfig>>>,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("files", &self.files)
            .field("region", &self.region)
            .field("verify_clients", &self.verify_clients)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads and checks the files. `verify_clients`: connections to this agent must
    /// present a certificate signed by the CA (`verify_https_client`).
    pub fn load(files: TlsFiles, region: &str, verify_clients: bool) -> Result<Arc<Tls>, TlsError> {
        let material = Arc::new(read_files(&files)?);
        let serving = server_config(&material, verify_clients)?.map(Arc::new);
        Ok(Arc::new(Tls {
            files,
            region: region.to_string(),
            verify_clients,
            current: RwLock::new(material),
            serving: RwLock::new(serving),
        }))
    }

    /// Reads the files again and uses them for every new connection; on an error the
    /// certificates in use stay (and the error says why).
    pub fn reload(&self) -> Result<(), TlsError> {
        let material = Arc::new(read_files(&self.files)?);
        let serving = server_config(&material, self.verify_clients)?.map(Arc::new);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = material;
        *self.serving.write().unwrap_or_else(|p| p.into_inner()) = serving;
        Ok(())
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    fn material(&self) -> Arc<Material> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The config for the next accepted connection (current files); `None` without a
    /// certificate and key.
    pub fn server_config(&self) -> Option<Arc<ServerConfig>> {
        self.serving
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A config for calling peers that must hold one of `roles` (whatever address is
    /// dialed), presenting this identity; follows reloads.
    pub fn client_config_for_roles(self: &Arc<Self>, roles: &[Role]) -> ClientConfig {
        self.client_config(Some(
            roles.iter().map(|r| r.name_in(&self.region)).collect(),
        ))
    }

    /// A config for calling an agent by the name or address dialed (the CLI: agent
    /// certificates also carry `localhost` and the addresses given when made).
    pub fn client_config_for_address(self: &Arc<Self>) -> ClientConfig {
        self.client_config(None)
    }

    fn client_config(self: &Arc<Self>, expect: Option<Vec<String>>) -> ClientConfig {
        let verifier = Arc::new(PeerVerifier {
            tls: self.clone(),
            expect,
        });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(CurrentKey(self.clone())));
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config
    }

    /// The roles `cert` (a peer's end-entity certificate, already verified against the
    /// CA by the handshake) is valid for in this region.
    pub fn roles_of(&self, cert: &CertificateDer<'_>) -> Vec<Role> {
        roles_of(cert, &self.region)
    }
}

/// The roles a certificate is valid for in `region` (by its DNS names).
pub fn roles_of(cert: &CertificateDer<'_>, region: &str) -> Vec<Role> {
    let Ok(parsed) = webpki::EndEntityCert::try_from(cert) else {
        return Vec::new();
    };
    Role::ALL
        .into_iter()
        .filter(|role| {
            ServerName::try_from(role.name_in(region))
                .map(|name| parsed.verify_is_valid_for_subject_name(&name).is_ok())
                .unwrap_or(false)
        })
        .collect()
}

fn server_config(
    material: &Material,
    verify_clients: bool,
) -> Result<Option<ServerConfig>, TlsError> {
    let Some(key) = &material.key else {
        return Ok(None);
    };
    let builder = WebPkiClientVerifier::builder_with_provider(material.roots.clone(), provider());
    let client_verifier = if verify_clients {
        builder.build()
    } else {
        // Still checked when one is presented: the node routes need a client's.
        builder.allow_unauthenticated().build()
    }
    .map_err(|e| TlsError::Config(format!("ca_file: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(Arc::new(FixedKey(key.clone())));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(config))
}

/// The server side's certificate: fixed per `ServerConfig` (a reload builds a new one).
#[derive(Debug)]
struct FixedKey(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for FixedKey {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The calling side's certificate: whatever was loaded last.
#[derive(Debug)]
struct CurrentKey(Arc<Tls>);

impl ResolvesClientCert for CurrentKey {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.material().key.clone()
    }

    fn has_certs(&self) -> bool {
        self.0.material().key.is_some()
    }
}

/// Checks a peer's certificate against the current CA and, for agents, the role names
/// expected instead of the dialed address.
#[derive(Debug)]
struct PeerVerifier {
    tls: Arc<Tls>,
    expect: Option<Vec<String>>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let inner = self.tls.material().server_verifier.clone();
        let Some(expect) = &self.expect else {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        };
        let mut last = None;
        for name in expect {
            let name = ServerName::try_from(name.as_str())
                .map_err(|e| rustls::Error::General(format!("role name {name:?}: {e}")))?;
            match inner.verify_server_cert(end_entity, intermediates, &name, ocsp, now) {
                Ok(ok) => return Ok(ok),
                Err(e) => last = Some(e),
            }
        }
        // The verifier's own error names the role expected and the names presented.
        Err(last.unwrap_or_else(|| rustls::Error::General("no role expected".into())))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls
            .material()
            .server_verifier
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.tls
            .material()
            .server_verifier
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.tls
            .material()
            .server_verifier
            .supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_carry_the_region() {
        assert_eq!(Role::Server.name_in("global"), "server.global.orch");
        assert_eq!(Role::Client.name_in("eu"), "client.eu.orch");
        assert_eq!(Role::Cli.name_in("global"), "cli.global.orch");
    }

    #[test]
    fn missing_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            ca_file: dir.path().join("ca.pem"),
            identity: Some((dir.path().join("cert.pem"), dir.path().join("key.pem"))),
        };
        let err = Tls::load(files, "global", true).unwrap_err().to_string();
        assert!(err.contains("ca_file") && err.contains("ca.pem"), "{err}");
    }
}
