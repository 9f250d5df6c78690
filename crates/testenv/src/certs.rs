//! Credentials for one control plane: a CA, the apiserver's serving certificate,
//! the service-account signing key, and a cluster-admin bearer token.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::Error;

pub(crate) struct Pki {
    pub ca_pem: String,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub service_account_key: PathBuf,
    pub service_account_public: PathBuf,
    pub token_file: PathBuf,
    pub token: String,
    /// (user, token) of the extra cluster-admin users.
    pub extra_tokens: Vec<(String, String)>,
}

pub(crate) const CA_FILE: &str = "ca.crt";
pub(crate) const SERVICE_ACCOUNT_KEY_FILE: &str = "sa.key";

/// `address` is where the apiserver serves, besides localhost.
pub(crate) fn generate(
    dir: &Path,
    extra_users: &[String],
    address: std::net::Ipv4Addr,
) -> Result<Pki, Error> {
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "overcast-testenv-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    // In-cluster clients reach the apiserver as the `kubernetes` Service:
    // its ClusterIP (the first of --service-cluster-ip-range) and DNS names.
    let mut names: Vec<String> = [
        "localhost",
        "127.0.0.1",
        "10.96.0.1",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    .map(String::from)
    .to_vec();
    if !address.is_loopback() {
        names.push(address.to_string());
    }
    let mut serving_params = CertificateParams::new(names)?;
    serving_params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_key = KeyPair::generate()?;
    let serving = serving_params.signed_by(&serving_key, &ca)?;

    let service_account = KeyPair::generate()?;
    let token = random_token()?;
    let extra_tokens = extra_users
        .iter()
        .map(|u| Ok((u.clone(), random_token()?)))
        .collect::<Result<Vec<_>, Error>>()?;
    // token,user,uid,"groups": system:masters is cluster-admin.
    let mut tokens_csv = format!("{token},admin,admin,\"system:masters\"\n");
    for (user, t) in &extra_tokens {
        tokens_csv.push_str(&format!("{t},{user},{user},\"system:masters\"\n"));
    }

    let write = |name: &str, contents: &str| -> Result<PathBuf, Error> {
        let path = dir.join(name);
        std::fs::write(&path, contents)
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok(path)
    };
    write(CA_FILE, &ca.pem())?;
    Ok(Pki {
        ca_pem: ca.pem(),
        serving_cert: write("apiserver.crt", &serving.pem())?,
        serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
        service_account_key: write(SERVICE_ACCOUNT_KEY_FILE, &service_account.serialize_pem())?,
        service_account_public: write("sa.pub", &service_account.public_key_pem())?,
        // token,user,uid,"groups": system:masters is cluster-admin.
        token_file: write("tokens.csv", &tokens_csv)?,
        token,
        extra_tokens,
    })
}

fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(Error::io("reading /dev/urandom for the admin token"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
