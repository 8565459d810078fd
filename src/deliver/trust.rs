//! A private certificate authority an endpoint is trusted by, besides the public roots: the way to
//! reach an `https://` receiver whose certificate an in-house CA signed.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};

/// The CA certificates read from one PEM file, checked to be usable as trust anchors.
#[derive(Clone)]
pub struct TrustedCa {
    file: PathBuf,
    certificates: Vec<CertificateDer<'static>>,
}

/// Why a CA file cannot be used; the message names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not PEM.
    #[error("{file} is not PEM: {reason}")]
    NotPem {
        /// The file.
        file: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// PEM without a `CERTIFICATE` section (a key alone, say).
    #[error("{file} holds no certificate (a PEM \"-----BEGIN CERTIFICATE-----\" section)")]
    NoCertificate {
        /// The file.
        file: PathBuf,
    },
    /// A `CERTIFICATE` section that is not an X.509 certificate.
    #[error("certificate {index} in {file} cannot be used as a root: {reason}")]
    BadCertificate {
        /// The file.
        file: PathBuf,
        /// Which section, from 1.
        index: usize,
        /// What rustls said.
        reason: String,
    },
}

impl TrustedCa {
    /// Reads every `CERTIFICATE` section of the PEM file at `file` (a bundle may hold several).
    pub fn from_pem_file(file: &Path) -> Result<Self, CaFileError> {
        let bytes = std::fs::read(file).map_err(|source| CaFileError::Read {
            file: file.to_owned(),
            source,
        })?;
        let certificates = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CaFileError::NotPem {
                file: file.to_owned(),
                reason: e.to_string(),
            })?;
        if certificates.is_empty() {
            return Err(CaFileError::NoCertificate {
                file: file.to_owned(),
            });
        }
        // The same check the client does when it is built, done here so that a bad file is a
        // configuration error at start-up rather than a failure to build a client.
        for (i, certificate) in certificates.iter().enumerate() {
            rustls::RootCertStore::empty()
                .add(certificate.clone())
                .map_err(|e| CaFileError::BadCertificate {
                    file: file.to_owned(),
                    index: i + 1,
                    reason: e.to_string(),
                })?;
        }
        Ok(Self {
            file: file.to_owned(),
            certificates,
        })
    }

    /// The file the certificates came from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The certificates, DER-encoded.
    pub fn certificates(&self) -> &[CertificateDer<'static>] {
        &self.certificates
    }
}

impl std::fmt::Debug for TrustedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedCa")
            .field("file", &self.file)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn files_that_hold_no_usable_certificate_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let error = TrustedCa::from_pem_file(&missing).unwrap_err();
        assert!(matches!(error, CaFileError::Read { .. }), "{error}");
        assert!(error.to_string().contains("missing.pem"), "{error}");

        let text = write(dir.path(), "text.pem", "just some words\n");
        let error = TrustedCa::from_pem_file(&text).unwrap_err();
        assert!(
            matches!(error, CaFileError::NoCertificate { .. }),
            "{error}"
        );

        let key_only = write(
            dir.path(),
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        let error = TrustedCa::from_pem_file(&key_only).unwrap_err();
        assert!(
            matches!(error, CaFileError::NoCertificate { .. }),
            "{error}"
        );

        let unterminated = write(dir.path(), "cut.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let error = TrustedCa::from_pem_file(&unterminated).unwrap_err();
        assert!(matches!(error, CaFileError::NotPem { .. }), "{error}");

        let not_x509 = write(
            dir.path(),
            "junk.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let error = TrustedCa::from_pem_file(&not_x509).unwrap_err();
        assert!(
            matches!(error, CaFileError::BadCertificate { index: 1, .. }),
            "{error}"
        );
    }

    #[test]
    fn every_certificate_of_a_bundle_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let pem: String = (0..2)
            .map(|_| {
                let key = rcgen::KeyPair::generate().unwrap();
                let mut params = rcgen::CertificateParams::new(Vec::new()).unwrap();
                params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
                params.self_signed(&key).unwrap().pem()
            })
            .collect();
        let bundle = write(dir.path(), "bundle.pem", &pem);
        let ca = TrustedCa::from_pem_file(&bundle).unwrap();
        assert_eq!(ca.certificates().len(), 2);
        assert_eq!(ca.file(), bundle);
    }
}
