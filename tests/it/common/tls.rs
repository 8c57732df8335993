//! A throw-away certificate authority for HTTPS tests, made with the `openssl` command in
//! a temp dir: its root (`ca_file`, what `SSL_CERT_FILE` may point a process at) and a
//! server certificate for `127.0.0.1` and `localhost` signed by it (`server_config`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

pub struct TestCa {
    dir: TempDir,
}

impl TestCa {
    pub fn create() -> TestCa {
        let dir = tempfile::Builder::new()
            .prefix("hookstream-ca-")
            .tempdir()
            .expect("create a temp dir for the test CA");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            dir.path(),
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=hookstream test CA",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        );
        openssl(
            dir.path(),
            &[
                &["req", "-x509"],
                &ec[..],
                &[
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=127.0.0.1",
                    "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-addext",
                    "basicConstraints=critical,CA:FALSE",
                    "-addext",
                    "keyUsage=critical,digitalSignature",
                    "-addext",
                    "extendedKeyUsage=serverAuth",
                ],
            ]
            .concat(),
        );
        TestCa { dir }
    }

    /// The root certificate, PEM.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server that presents the signed certificate and offers `h2` before `http/1.1`,
    /// so a client that offered `h2` would get it.
    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = CertificateDer::pem_file_iter(self.dir.path().join("server.pem"))
            .expect("read server.pem")
            .collect::<Result<Vec<_>, _>>()
            .expect("parse server.pem");
        let key = PrivateKeyDer::from_pem_file(self.dir.path().join("server.key"))
            .expect("parse server.key");
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server certificate and key");
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Arc::new(config)
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (needed to make the test CA)");
    assert!(
        output.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
