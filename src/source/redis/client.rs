//! The Redis connection: a single node or a cluster, plaintext or TLS, with the settings the
//! orchestrator uses (e2b-dev/infra `packages/shared/pkg/factories/redis.go`): TLS only when
//! asked for, a private CA for it, a password sent only over TLS.

use crate::util::secret::Secret;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ConnectionAddr, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, Value};
use std::fmt;
use std::time::Duration;

/// A blocked `XREADGROUP` answers after `BLOCK`; no answer well after that means a dead connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connecting (TCP, TLS, AUTH) longer than this counts as a failed attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where Redis is and how to talk to it, validated.
#[derive(Clone)]
pub struct RedisConnectionSettings {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether `host:port` is a Redis Cluster node (`REDIS_CLUSTER_URL`).
    pub cluster: bool,
    /// TLS, when enabled.
    pub tls: Option<RedisTls>,
    /// ACL user, when the URL names one.
    pub username: Option<String>,
    /// `AUTH` password; never logged.
    pub password: Option<Secret>,
    /// Database index; the orchestrator always uses 0.
    pub db: i64,
}

/// TLS to Redis.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// PEM CA certificate(s) trusted instead of the public roots (`REDIS_TLS_CA_BASE64`).
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisConnectionSettings {
    /// `host:port`: all of the connection that is ever logged.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for RedisConnectionSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConnectionSettings")
            .field("addr", &self.addr())
            .field("cluster", &self.cluster)
            .field("tls", &self.tls.is_some())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish()
    }
}

/// A single-node or cluster client.
#[expect(
    clippy::large_enum_variant,
    reason = "one client per source, made once: boxing saves nothing"
)]
pub(super) enum RedisClient {
    Single(redis::Client),
    Cluster(redis::cluster::ClusterClient),
}

impl RedisClient {
    /// Builds the client (certificates are parsed here); connects nothing yet.
    pub(super) fn open(settings: &RedisConnectionSettings) -> Result<Self, RedisError> {
        let addr = match &settings.tls {
            Some(_) => ConnectionAddr::TcpTls {
                host: settings.host.clone(),
                port: settings.port,
                insecure: false,
                tls_params: None,
            },
            None => ConnectionAddr::Tcp(settings.host.clone(), settings.port),
        };
        let info = addr.into_connection_info()?;
        let mut redis_settings = info.redis_settings().clone().set_db(settings.db);
        if let Some(username) = &settings.username {
            redis_settings = redis_settings.set_username(username);
        }
        if let Some(password) = &settings.password {
            redis_settings = redis_settings.set_password(password.expose());
        }
        let info = info.set_redis_settings(redis_settings);
        let certs = settings
            .tls
            .as_ref()
            .and_then(|tls| tls.ca_pem.clone())
            .map(|pem| redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            });
        if settings.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(vec![info])
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            builder.build().map(Self::Cluster)
        } else {
            match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs).map(Self::Single),
                None => redis::Client::open(info).map(Self::Single),
            }
        }
    }

    pub(super) async fn connect(&self) -> Result<RedisConnection, RedisError> {
        match self {
            Self::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT));
                client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await
                    .map(RedisConnection::Single)
            }
            Self::Cluster(client) => client
                .get_async_connection()
                .await
                .map(RedisConnection::Cluster),
        }
    }
}

/// A connection to a single node or to a cluster; commands are the same for both.
pub(super) enum RedisConnection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(host: &str) -> RedisConnectionSettings {
        RedisConnectionSettings {
            host: host.into(),
            port: 6380,
            cluster: false,
            tls: None,
            username: None,
            password: Some(Secret::new("hunter2")),
            db: 0,
        }
    }

    #[test]
    fn the_logged_address_and_debug_output_hold_no_password() {
        assert_eq!(settings("redis.internal").addr(), "redis.internal:6380");
        assert_eq!(settings("::1").addr(), "[::1]:6380");
        let debug = format!("{:?}", settings("h"));
        assert!(!debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn a_ca_that_is_not_pem_is_refused_when_the_client_is_built() {
        let mut s = settings("127.0.0.1");
        s.tls = Some(RedisTls {
            ca_pem: Some(
                b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n".to_vec(),
            ),
        });
        assert!(RedisClient::open(&s).is_err());
        s.tls = Some(RedisTls { ca_pem: None });
        assert!(RedisClient::open(&s).is_ok());
    }
}
