//! Connecting to etcd: [`EtcdConfig`] (endpoints, TLS, user and password),
//! [`EtcdClient`] (a cheap-to-clone connection) and [`EtcdError`].
//!
//! No `etcd-client` type appears in this crate's public signatures: the
//! connection is wrapped, and errors carry messages and the key they are
//! about.

use std::fmt;
use std::time::Duration;

use gitops_core::source::BoxError;

/// The environment variable [`EtcdConfig::from_env`] reads: endpoints,
/// comma-separated (`http://127.0.0.1:2379,http://10.0.0.2:2379`).
pub const ENDPOINTS_ENV: &str = "GITOPS_ETCD_ENDPOINTS";

/// The largest value this crate writes in one request. etcd refuses
/// requests over 1.5 MiB by default (`--max-request-bytes`); this leaves
/// room for the keys and the transaction around the value.
pub const MAX_VALUE_BYTES: usize = 1_400_000;

/// The largest reply this crate accepts from etcd: 16 MiB, set on purpose
/// (tonic's default is 4 MiB, and `etcd-client` keeps it). The stores never
/// rely on it: they read values in pages of at most
/// [`VALUES_PER_PAGE`] keys, which fit with room to spare
/// (`VALUES_PER_PAGE * MAX_VALUE_BYTES` is under 16 MiB).
pub const DECODE_LIMIT: usize = 16 * 1024 * 1024;

/// How many values one paged read asks etcd for: as many values of
/// [`MAX_VALUE_BYTES`] (plus their keys) as fit in [`DECODE_LIMIT`].
pub const VALUES_PER_PAGE: usize = DECODE_LIMIT / (MAX_VALUE_BYTES + 16 * 1024);

/// How many keys one keys-only paged read asks etcd for.
pub const KEYS_PER_PAGE: usize = 1_000;

/// Why talking to etcd failed; every variant says which endpoints or key.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No endpoint was configured.
    #[error(
        "no etcd endpoints configured: set {ENDPOINTS_ENV} (e.g. http://127.0.0.1:2379) or EtcdConfig::endpoints"
    )]
    NoEndpoints,
    /// The connection could not be established, or the credentials were
    /// refused.
    #[error("etcd {endpoints}: cannot connect: {message}")]
    Connect {
        /// The endpoints tried, comma-separated.
        endpoints: String,
        /// What went wrong.
        message: String,
        /// Whether retrying may help: an unreachable cluster may come back,
        /// a refused password or certificate will not.
        transient: bool,
    },
    /// The TLS settings are unusable (a bad PEM file, ...).
    #[error("etcd TLS configuration: {message}")]
    Tls {
        /// What is wrong.
        message: String,
    },
    /// A request failed.
    #[error("etcd {op} {key}: {message}")]
    Request {
        /// The operation (`get`, `txn`, `lease grant`, ...).
        op: &'static str,
        /// The key or prefix it was about.
        key: String,
        /// What went wrong.
        message: String,
        /// Whether retrying may help (unavailable, timeout, lost connection).
        transient: bool,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A value is larger than etcd accepts in one request.
    #[error("etcd {key}: {bytes} bytes, more than the limit of {limit} bytes per write")]
    TooLarge {
        /// The key.
        key: String,
        /// The value's size.
        bytes: usize,
        /// The limit ([`MAX_VALUE_BYTES`]).
        limit: usize,
    },
}

impl EtcdError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            EtcdError::Connect { transient, .. } | EtcdError::Request { transient, .. } => {
                *transient
            }
            EtcdError::NoEndpoints | EtcdError::Tls { .. } | EtcdError::TooLarge { .. } => false,
        }
    }

    /// Wraps an `etcd-client` error about `op` on `key`.
    pub(crate) fn request(op: &'static str, key: impl Into<String>, e: etcd_client::Error) -> Self {
        let transient = is_transient(&e);
        let message = match &e {
            etcd_client::Error::GRpcStatus(status) => {
                format!("{:?}: {}", status.code(), status.message())
            }
            other => other.to_string(),
        };
        EtcdError::Request {
            op,
            key: key.into(),
            message,
            transient,
            source: Some(Box::new(e)),
        }
    }
}

/// Whether an `etcd-client` error may go away by itself.
fn is_transient(e: &etcd_client::Error) -> bool {
    match e {
        // gRPC codes: 1 cancelled, 2 unknown, 4 deadline exceeded,
        // 8 resource exhausted, 10 aborted, 13 internal, 14 unavailable.
        etcd_client::Error::GRpcStatus(status) => {
            matches!(i32::from(status.code()), 1 | 2 | 4 | 8 | 10 | 13 | 14)
        }
        etcd_client::Error::TransportError(_)
        | etcd_client::Error::IoError(_)
        | etcd_client::Error::WatchError(_)
        | etcd_client::Error::LeaseKeepAliveError(_) => true,
        _ => false,
    }
}

/// Client certificates and the authority to verify the server with.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// PEM of the CA that signed the server's certificate (`None`: the
    /// system's roots are not loaded; give the CA explicitly).
    pub ca_pem: Option<Vec<u8>>,
    /// PEM of this client's certificate and key, for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// The server name to verify (default: the endpoint's host).
    pub domain: Option<String>,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<pem>"))
            .field("identity", &self.identity.as_ref().map(|_| "<redacted>"))
            .field("domain", &self.domain)
            .finish()
    }
}

/// Where etcd is and how to authenticate. `Debug` never shows the password
/// or the client key.
#[derive(Clone)]
pub struct EtcdConfig {
    /// Endpoints (`http://host:2379`, `https://host:2379` with TLS).
    pub endpoints: Vec<String>,
    /// TLS settings; `None` for plain `http://`.
    pub tls: Option<TlsConfig>,
    /// User name and password for etcd's authentication.
    pub user: Option<(String, String)>,
    /// Limit for establishing a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Limit for each request (default 5 s).
    pub request_timeout: Duration,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("tls", &self.tls)
            .field(
                "user",
                &self.user.as_ref().map(|(name, _)| (name, "<redacted>")),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

impl Default for EtcdConfig {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            tls: None,
            user: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
        }
    }
}

impl EtcdConfig {
    /// A configuration for these endpoints, no TLS, no authentication.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Endpoints from [`ENDPOINTS_ENV`] (comma-separated); fails with
    /// [`EtcdError::NoEndpoints`] when it is unset or empty.
    pub fn from_env() -> Result<Self, EtcdError> {
        let value = std::env::var(ENDPOINTS_ENV).unwrap_or_default();
        let endpoints: Vec<String> = value
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        Ok(Self::new(endpoints))
    }

    /// Sets the user name and password.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user = Some((name.into(), password.into()));
        self
    }

    /// Sets the TLS settings.
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    fn options(&self) -> etcd_client::ConnectOptions {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(self.connect_timeout)
            .with_timeout(self.request_timeout)
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(5));
        if let Some((name, password)) = &self.user {
            options = options.with_user(name.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            let mut t = etcd_client::TlsOptions::new();
            if let Some(ca) = &tls.ca_pem {
                t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
            }
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain.clone());
            }
            options = options.with_tls(t);
        }
        options
    }
}

/// A connection to etcd; clones share it.
#[derive(Clone)]
pub struct EtcdClient {
    pub(crate) inner: etcd_client::Client,
    pub(crate) endpoints: String,
}

impl fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdClient")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl EtcdClient {
    /// Connects (and authenticates, when a user is configured).
    pub async fn connect(config: &EtcdConfig) -> Result<Self, EtcdError> {
        if config.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let endpoints = config.endpoints.join(",");
        let connect = etcd_client::Client::connect(&config.endpoints, Some(config.options()));
        let inner = match tokio::time::timeout(config.connect_timeout, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(EtcdError::Connect {
                    endpoints,
                    // The error text never holds the password: etcd-client
                    // sends it in a request body, not in a URL.
                    message: e.to_string(),
                    // A refused password is `InvalidArgument`: not transient.
                    transient: is_transient(&e),
                });
            }
            Err(_) => {
                return Err(EtcdError::Connect {
                    endpoints,
                    message: format!("no answer within {:?}", config.connect_timeout),
                    transient: true,
                });
            }
        };
        let client = Self { inner, endpoints };
        // Connecting is lazy; one cheap request proves the cluster answers
        // (and that the credentials are accepted). `status` needs no
        // permission on any key.
        client.revision().await.map_err(|e| EtcdError::Connect {
            endpoints: client.endpoints.clone(),
            message: e.to_string(),
            transient: e.is_transient(),
        })?;
        Ok(client)
    }

    /// The endpoints, comma-separated (for messages).
    pub fn endpoints(&self) -> &str {
        &self.endpoints
    }

    pub(crate) fn kv(&self) -> etcd_client::KvClient {
        self.inner
            .kv_client()
            .max_decoding_message_size(DECODE_LIMIT)
    }

    pub(crate) fn lease(&self) -> etcd_client::LeaseClient {
        self.inner.lease_client()
    }

    pub(crate) fn watch(&self) -> etcd_client::WatchClient {
        // One reply may carry the events of up to 1,000 revisions.
        self.inner
            .watch_client()
            .max_decoding_message_size(DECODE_LIMIT)
    }

    /// Revokes a lease by id: every key attached to it is deleted at once.
    /// Operators (and tests) use it to take a replica's ownership away.
    pub async fn revoke_lease(&self, lease: i64) -> Result<(), EtcdError> {
        self.lease()
            .revoke(lease)
            .await
            .map(|_| ())
            .map_err(|e| EtcdError::request("lease revoke", lease.to_string(), e))
    }

    /// The current revision of the cluster.
    pub async fn revision(&self) -> Result<i64, EtcdError> {
        let resp = self
            .inner
            .maintenance_client()
            .status()
            .await
            .map_err(|e| EtcdError::request("status", "", e))?;
        Ok(resp.header().map_or(0, |h| h.revision()))
    }
}

/// Every key under `prefix`: key and value (lossy UTF-8) and lease id.
pub(crate) async fn list_prefix(
    client: &EtcdClient,
    prefix: &str,
) -> Result<Vec<(String, String, i64)>, EtcdError> {
    let resp = client
        .kv()
        .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
        .await
        .map_err(|e| EtcdError::request("get", prefix, e))?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.lease(),
            )
        })
        .collect())
}

/// Checks a value against [`MAX_VALUE_BYTES`].
pub(crate) fn check_size(key: &str, bytes: usize) -> Result<(), EtcdError> {
    if bytes > MAX_VALUE_BYTES {
        Err(EtcdError::TooLarge {
            key: key.to_owned(),
            bytes,
            limit: MAX_VALUE_BYTES,
        })
    } else {
        Ok(())
    }
}
