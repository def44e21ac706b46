//! The kubeconfig read into [`ApiAccess`]: the server, the cluster CA (file or data), a client
//! certificate or a bearer token, `tls-server-name`, `insecure-skip-tls-verify`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use base64::Engine as _;
use rustls::ClientConfig;
use serde::Deserialize;

use super::DiscoveryError;

fn kc_err(path: &Path, reason: impl ToString) -> DiscoveryError {
    DiscoveryError::Kubeconfig {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Kubeconfig {
    current_context: Option<String>,
    #[serde(default)]
    clusters: Vec<Named<Cluster>>,
    #[serde(default)]
    users: Vec<Named<User>>,
    #[serde(default)]
    contexts: Vec<Named<Context>>,
}

#[derive(Debug, Deserialize)]
struct Named<T> {
    name: String,
    #[serde(alias = "cluster", alias = "user", alias = "context")]
    value: T,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct Cluster {
    server: String,
    certificate_authority: Option<PathBuf>,
    certificate_authority_data: Option<String>,
    #[serde(default)]
    insecure_skip_tls_verify: bool,
    tls_server_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
struct User {
    client_certificate: Option<PathBuf>,
    client_certificate_data: Option<String>,
    client_key: Option<PathBuf>,
    client_key_data: Option<String>,
    token: Option<String>,
    /// client-go spells this one in camelCase.
    #[serde(rename = "tokenFile")]
    token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
struct Context {
    cluster: String,
    #[serde(default)]
    user: String,
}

/// What a kubeconfig's current context says about reaching the API.
#[derive(Clone)]
pub struct ApiAccess {
    /// `server` as host and port (`https://host:port`).
    pub server_host: String,
    pub server_port: u16,
    /// TLS server name to verify instead of the address asked.
    pub tls_server_name: Option<String>,
    pub bearer_token: Option<String>,
    pub tls: Arc<ClientConfig>,
    /// `insecure-skip-tls-verify: true`: no server certificate is verified.
    pub insecure: bool,
}

impl std::fmt::Debug for ApiAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiAccess")
            .field("server_host", &self.server_host)
            .field("server_port", &self.server_port)
            .field("tls_server_name", &self.tls_server_name)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<redacted>"),
            )
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// Reads `path` (relative paths inside it are relative to its directory).
///
/// # Errors
/// Unreadable file, no current context, unusable credentials.
pub fn load_kubeconfig(path: &Path) -> Result<ApiAccess, DiscoveryError> {
    let text = std::fs::read_to_string(path).map_err(|e| kc_err(path, e))?;
    let kc: Kubeconfig = serde_yaml_ng::from_str(&text).map_err(|e| kc_err(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rel = |p: &Path| base.join(p);
    let ctx_name = kc
        .current_context
        .clone()
        .or_else(|| kc.contexts.first().map(|c| c.name.clone()))
        .ok_or_else(|| kc_err(path, "no current-context"))?;
    let ctx = kc
        .contexts
        .iter()
        .find(|c| c.name == ctx_name)
        .map(|c| &c.value);
    let cluster = match ctx {
        Some(c) => kc.clusters.iter().find(|x| x.name == c.cluster),
        None => kc.clusters.first(),
    }
    .ok_or_else(|| kc_err(path, format!("context {ctx_name:?} names no known cluster")))?;
    let (cluster_name, cluster) = (&cluster.name, &cluster.value);
    let default_user = User::default();
    let user = ctx
        .and_then(|c| kc.users.iter().find(|u| u.name == c.user))
        .map_or(&default_user, |u| &u.value);

    let rest = cluster
        .server
        .strip_prefix("https://")
        .ok_or_else(|| kc_err(path, format!("server {:?} is not https://", cluster.server)))?;
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
            h.trim_matches(['[', ']']).to_string(),
            p.parse::<u16>()
                .map_err(|_| kc_err(path, format!("bad port in {:?}", cluster.server)))?,
        ),
        _ => (authority.trim_matches(['[', ']']).to_string(), 443),
    };

    let b64 = |what: &str, s: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .map_err(|e| kc_err(path, format!("{what}: {e}")))
    };
    let read = |what: &str, p: &Path| {
        std::fs::read(rel(p)).map_err(|e| kc_err(path, format!("{what} {}: {e}", p.display())))
    };
    let ca = match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(d), _) => Some(b64("certificate-authority-data", d)?),
        (None, Some(p)) => Some(read("certificate-authority", p)?),
        (None, None) if cluster.insecure_skip_tls_verify => None,
        // Like kubectl, no CA and no explicit opt-out is no silent skip: it is refused.
        (None, None) => {
            return Err(DiscoveryError::NoCa {
                path: path.display().to_string(),
                cluster: cluster_name.clone(),
            });
        }
    };
    let cert = match (&user.client_certificate_data, &user.client_certificate) {
        (Some(d), _) => Some(b64("client-certificate-data", d)?),
        (None, Some(p)) => Some(read("client-certificate", p)?),
        (None, None) => None,
    };
    let key = match (&user.client_key_data, &user.client_key) {
        (Some(d), _) => Some(b64("client-key-data", d)?),
        (None, Some(p)) => Some(read("client-key", p)?),
        (None, None) => None,
    };
    let token = match (&user.token, &user.token_file) {
        (Some(t), _) => Some(t.trim().to_string()),
        (None, Some(p)) => Some(
            String::from_utf8_lossy(&read("tokenFile", p)?)
                .trim()
                .to_string(),
        ),
        (None, None) => None,
    };
    let client = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(kc_err(path, "client certificate and key go together")),
    };
    let tls = crate::net::tls::from_pem(ca.as_deref(), client, cluster.insecure_skip_tls_verify)
        .map_err(|e| kc_err(path, e))?;
    Ok(ApiAccess {
        server_host: host,
        server_port: port,
        tls_server_name: cluster.tls_server_name.clone(),
        bearer_token: token,
        tls,
        insecure: cluster.insecure_skip_tls_verify,
    })
}

/// Start-up check of `--discover-from-kubeconfig`: a kubeconfig that exists but names no
/// CA without `insecure-skip-tls-verify: true` is refused at once (it would never be used).
/// One that is missing or does not load yet is left to the discovery task, which looks for
/// it until it loads (it appears with `kubeadm init`).
///
/// # Errors
/// [`DiscoveryError::NoCa`].
pub fn check_kubeconfig(path: &Path) -> Result<(), DiscoveryError> {
    match load_kubeconfig(path) {
        Err(e @ DiscoveryError::NoCa { .. }) => Err(e),
        _ => Ok(()),
    }
}

/// The one warning of an insecure kubeconfig.
pub(super) fn warn_insecure(path: &Path, access: &ApiAccess) {
    log::warn!(
        "kubeconfig {}: insecure-skip-tls-verify: API server certificates are not verified{}",
        path.display(),
        if access.bearer_token.is_some() {
            "; its bearer token is sent to whoever answers (as kubectl does)"
        } else {
            ""
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeadm_style_kubeconfig_gives_server_ca_and_client_certificate() {
        let ca = rcgen::generate_simple_self_signed(vec!["kubernetes".into()]).unwrap();
        let client = rcgen::generate_simple_self_signed(vec!["admin".into()]).unwrap();
        let b = |s: String| base64::engine::general_purpose::STANDARD.encode(s);
        let dir = std::env::temp_dir().join(format!("xvip-kc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.conf");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {}\n    server: https://10.0.0.100:6443\n  name: kubernetes\n\
                 contexts:\n- context:\n    cluster: kubernetes\n    user: kubernetes-admin\n  name: kubernetes-admin@kubernetes\n\
                 current-context: kubernetes-admin@kubernetes\npreferences: {{}}\n\
                 users:\n- name: kubernetes-admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                b(ca.cert.pem()),
                b(client.cert.pem()),
                b(client.signing_key.serialize_pem())
            ),
        )
        .unwrap();
        let a = load_kubeconfig(&path).unwrap();
        assert_eq!(
            (a.server_host.as_str(), a.server_port),
            ("10.0.0.100", 6443)
        );
        assert!(a.bearer_token.is_none());

        std::fs::write(dir.join("token"), "abc\n").unwrap();
        std::fs::write(
            &path,
            "clusters:\n- name: c\n  cluster:\n    server: https://api.example:8443/\n    insecure-skip-tls-verify: true\n\
             users:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
        )
        .unwrap();
        let a = load_kubeconfig(&path);
        std::fs::remove_dir_all(&dir).unwrap();
        let a = a.unwrap();
        assert_eq!(
            (a.server_host.as_str(), a.server_port),
            ("api.example", 8443)
        );
        // Relative to the kubeconfig's directory, trimmed.
        assert_eq!(a.bearer_token.as_deref(), Some("abc"));
        assert!(a.insecure);
    }

    #[test]
    fn a_cluster_without_a_ca_is_refused_unless_it_says_insecure_skip_tls_verify() {
        let dir = std::env::temp_dir().join(format!("xvip-kc-noca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.conf");
        let conf = |extra: &str| {
            format!(
                "clusters:\n- name: prod\n  cluster:\n    server: https://10.0.0.100:6443\n{extra}\
                 users:\n- name: u\n  user:\n    token: s3cr3t\ncontexts:\n- name: x\n  context: {{cluster: prod, user: u}}\ncurrent-context: x\n"
            )
        };
        std::fs::write(&path, conf("")).unwrap();
        let refused = load_kubeconfig(&path).unwrap_err();
        let checked = check_kubeconfig(&path);
        std::fs::write(&path, conf("    insecure-skip-tls-verify: false\n")).unwrap();
        let explicit_false = load_kubeconfig(&path).map(|_| ());
        std::fs::write(&path, conf("    insecure-skip-tls-verify: true\n")).unwrap();
        let insecure = load_kubeconfig(&path);
        let missing = check_kubeconfig(&dir.join("not-yet"));
        std::fs::remove_dir_all(&dir).unwrap();

        let line = refused.to_string();
        assert!(matches!(refused, DiscoveryError::NoCa { .. }), "{line}");
        assert!(
            line.contains("admin.conf") && line.contains("\"prod\""),
            "{line}"
        );
        assert!(line.contains("certificate-authority"), "{line}");
        assert!(!line.contains("s3cr3t") && !line.contains('\n'), "{line}");
        assert!(checked.is_err(), "the start-up check let it through");
        assert!(matches!(explicit_false, Err(DiscoveryError::NoCa { .. })));
        let a = insecure.expect("an explicit opt-out loads");
        assert!(a.insecure);
        assert_eq!(a.bearer_token.as_deref(), Some("s3cr3t"));
        assert!(!format!("{a:?}").contains("s3cr3t"));
        // Not there yet: left to the task, which waits for `kubeadm init`.
        assert!(missing.is_ok());
    }
}
