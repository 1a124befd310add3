//! TLS for `amqps://` and `https://`: one rustls client configuration, verifying the server
//! against the system roots plus `--tls-ca-file`, with an optional client certificate. Never a
//! silent fallback to plaintext; `--tls-insecure` turns verification off, loudly.

use crate::error::{Error, Result};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};
use std::{path::PathBuf, sync::Arc};

/// Said on every run with `--tls-insecure`, even with `--quiet`.
pub const INSECURE_WARNING: &str = " [!] --tls-insecure: the server's certificate is NOT verified; \
anyone on the network path can read and change this traffic";

/// The TLS options, as given.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub insecure: bool,
}

impl TlsSettings {
    /// Builds the client configuration (reading the files given).
    pub fn client_config(&self) -> Result<ClientConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("no usable TLS protocol version", e))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        } else {
            builder.with_root_certificates(self.roots()?)
        };
        match (&self.cert_file, &self.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let certs = read_certs(cert_file)?;
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| Error::Input {
                    path: key_file.display().to_string(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| tls_error("the client certificate and key do not fit", e))
            }
            _ => Ok(builder.with_no_client_auth()),
        }
    }

    /// The system's roots, plus the CA file's certificates.
    fn roots(&self) -> Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        // Unreadable system certificates are skipped: the CA file may be all that is needed.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
        if let Some(ca_file) = &self.ca_file {
            for cert in read_certs(ca_file)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error("a certificate of --tls-ca-file is not usable", e))?;
            }
        }
        Ok(roots)
    }
}

fn read_certs(path: &PathBuf) -> Result<Vec<CertificateDer<'static>>> {
    let input = |source: std::io::Error| Error::Input {
        path: path.display().to_string(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| input(std::io::Error::other(e.to_string())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| input(std::io::Error::other(e.to_string())))?;
    if certs.is_empty() {
        return Err(input(std::io::Error::other("no PEM certificate in it")));
    }
    Ok(certs)
}

fn tls_error(what: &str, error: rustls::Error) -> Error {
    Error::Tls {
        context: what.to_string(),
        source: error,
    }
}

/// `--tls-insecure`: accepts any server certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
