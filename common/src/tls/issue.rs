//! Making certificates for `orch tls`: a CA, and certificates it signs for each role
//! (ECDSA P-256, PEM), enough for a small cluster without OpenSSL.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::{Role, TlsError};

/// A certificate and its private key, PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The longest validity `orch tls` issues (10 years).
pub const MAX_DAYS: u32 = 3650;

fn err(what: &str) -> impl Fn(rcgen::Error) -> TlsError + '_ {
    move |e| TlsError::Config(format!("{what}: {e}"))
}

fn validity(params: &mut CertificateParams, days: u32) -> Result<(), TlsError> {
    if days == 0 || days > MAX_DAYS {
        return Err(TlsError::Config(format!(
            "validity must be 1 to {MAX_DAYS} days, not {days}"
        )));
    }
    let now = SystemTime::now();
    // A little slack for clocks that are behind.
    params.not_before = (now - Duration::from_secs(60)).into();
    params.not_after = (now + Duration::from_secs(u64::from(days) * 86_400)).into();
    Ok(())
}

/// A new CA for `region`'s agents, valid `days`.
pub fn ca(region: &str, days: u32) -> Result<Issued, TlsError> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err("CA"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, format!("orch agent CA {region}"));
    name.push(DnType::OrganizationName, "orch");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, days)?;
    let key = KeyPair::generate().map_err(err("CA key"))?;
    let cert = params.self_signed(&key).map_err(err("CA certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// What a certificate is for, beyond its role.
#[derive(Debug, Clone)]
pub struct CertRequest {
    pub role: Role,
    pub region: String,
    pub days: u32,
    /// More DNS names (agents: the names others dial them by).
    pub dns_names: Vec<String>,
    /// IP addresses (agents: the addresses others dial them at).
    pub ip_addresses: Vec<std::net::IpAddr>,
}

/// A certificate for `req.role`, signed by the CA in `ca` (its certificate and key).
/// Agent certificates also name `localhost` and 127.0.0.1 so that the CLI on the same
/// machine can check them by address; CLI certificates only authenticate their holder.
pub fn cert(ca: &Issued, req: &CertRequest) -> Result<Issued, TlsError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(err("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(err("CA certificate"))?;
    let mut names = vec![req.role.name_in(&req.region)];
    if req.role != Role::Cli {
        names.push("localhost".into());
        names.push("127.0.0.1".into());
    }
    names.extend(req.dns_names.iter().cloned());
    names.extend(req.ip_addresses.iter().map(|ip| ip.to_string()));
    names.dedup();
    let mut params = CertificateParams::new(names).map_err(err("certificate names"))?;
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, req.role.name_in(&req.region));
    params.distinguished_name = name;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // Agents both serve and call; the CLI only calls.
    params.extended_key_usages = match req.role {
        Role::Cli => vec![ExtendedKeyUsagePurpose::ClientAuth],
        _ => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, req.days)?;
    let key = KeyPair::generate().map_err(err("key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(err("certificate"))?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::CertificateDer;

    use super::*;
    use crate::tls::{roles_of, Tls, TlsFiles};

    fn request(role: Role) -> CertRequest {
        CertRequest {
            role,
            region: "global".into(),
            days: 30,
            dns_names: vec![],
            ip_addresses: vec![],
        }
    }

    #[test]
    fn a_certificate_is_valid_for_its_role_only() {
        let ca = ca("global", 365).unwrap();
        for role in Role::ALL {
            let issued = cert(&ca, &request(role)).unwrap();
            let der = CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap();
            assert_eq!(roles_of(&der, "global"), vec![role]);
            assert!(roles_of(&der, "eu").is_empty());
        }
    }

    #[test]
    fn issued_files_load_as_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("global", 365).unwrap();
        let server = cert(&ca, &request(Role::Server)).unwrap();
        let (cert_file, key_file) = (dir.path().join("server.pem"), dir.path().join("key.pem"));
        let files = TlsFiles {
            ca_file: dir.path().join("ca.pem"),
            identity: Some((cert_file.clone(), key_file.clone())),
        };
        std::fs::write(&files.ca_file, &ca.cert_pem).unwrap();
        std::fs::write(&cert_file, &server.cert_pem).unwrap();
        std::fs::write(&key_file, &server.key_pem).unwrap();
        let tls = Tls::load(files.clone(), "global", true).unwrap();
        assert!(tls.server_config().is_some());
        // A key that does not go with the certificate is refused, and a failed reload
        // keeps what was loaded.
        let other = cert(&ca, &request(Role::Client)).unwrap();
        std::fs::write(&key_file, &other.key_pem).unwrap();
        let e = tls.reload().unwrap_err().to_string();
        assert!(e.contains("key_file"), "{e}");
        assert!(Tls::load(files, "global", true).is_err());
    }

    #[test]
    fn validity_is_bounded() {
        assert!(ca("global", 0).is_err());
        assert!(ca("global", MAX_DAYS + 1).is_err());
    }
}
