//! An OpenID Connect issuer for tests: an HTTP server on a loopback port serving its discovery
//! document (`/.well-known/openid-configuration`, naming `/jwks`) and a JWKS the test changes
//! while it runs (key rotation), counting the requests to each. Keys are ECDSA P-256 pairs
//! generated here (rcgen over ring); tokens are signed with `jsonwebtoken`.
#![allow(dead_code)] // each test crate uses a different subset

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A signing key and its public JWK.
pub struct SigningKey {
    pub kid: String,
    pub key: EncodingKey,
    pub jwk: Value,
    /// The public key as PEM (SubjectPublicKeyInfo), what a confused verifier would use as an
    /// HMAC secret.
    pub public_pem: String,
    /// The public point (0x04 || x || y).
    pub public_raw: Vec<u8>,
}

impl SigningKey {
    /// A new ES256 key named `kid`.
    pub fn generate(kid: &str) -> Self {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let point = pair.public_key_raw().to_vec();
        Self {
            kid: kid.to_owned(),
            key: EncodingKey::from_ec_der(&pair.serialize_der()),
            jwk: json!({
                "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
            }),
            public_pem: pair.public_key_pem(),
            public_raw: point,
        }
    }

    /// `claims` signed with this key (header `alg: ES256`, `kid`).
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }
}

/// `header.payload.signature` with these JSON parts and raw signature bytes.
pub fn assemble(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        B64.encode(header.to_string()),
        B64.encode(payload.to_string()),
        B64.encode(signature)
    )
}

/// `claims` signed HS256 with `secret`, under `kid`.
pub fn sign_hs256(kid: &str, secret: &[u8], claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(secret).unwrap()).unwrap()
}

#[derive(Default)]
struct Shared {
    jwks: Mutex<Value>,
    discovery_requests: AtomicUsize,
    jwks_requests: AtomicUsize,
    /// Where the server is.
    url: Mutex<String>,
    /// The `issuer` its discovery document declares.
    issuer: Mutex<String>,
}

/// A running issuer; stopped when dropped (with the runtime of its thread).
pub struct OidcIssuer {
    url: String,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl OidcIssuer {
    /// Serves `keys` at `http://127.0.0.1:<port>`, which is also its issuer URL.
    pub fn start(keys: &[&SigningKey]) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        let shared = Arc::new(Shared::default());
        *shared.issuer.lock().unwrap() = url.clone();
        *shared.url.lock().unwrap() = url.clone();
        let (shutdown, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let issuer = Self {
            url,
            shared,
            _shutdown: shutdown,
        };
        issuer.publish(keys);
        issuer
    }

    /// The issuer URL (`iss`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves exactly these keys from now on.
    pub fn publish(&self, keys: &[&SigningKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.shared.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    /// The `issuer` the discovery document declares from now on.
    pub fn declare_issuer(&self, issuer: &str) {
        *self.shared.issuer.lock().unwrap() = issuer.to_owned();
    }

    /// Requests for the discovery document so far.
    pub fn discovery_requests(&self) -> usize {
        self.shared.discovery_requests.load(Ordering::SeqCst)
    }

    /// Requests for the JWKS so far.
    pub fn jwks_requests(&self) -> usize {
        self.shared.jwks_requests.load(Ordering::SeqCst)
    }

    /// `AUTH_PROVIDER_CONFIG` for this issuer with one audience and a cache of `cache`.
    pub fn provider_config(&self, audience: &str, cache: &str) -> String {
        json!({"jwt": [{
            "issuer": {"url": self.url, "audiences": [audience], "audienceMatchPolicy": "MatchAny"},
            "cacheDuration": cache,
        }]})
        .to_string()
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    shared.discovery_requests.fetch_add(1, Ordering::SeqCst);
    let issuer = shared.issuer.lock().unwrap().clone();
    let url = shared.url.lock().unwrap().clone();
    axum::Json(json!({
        "issuer": issuer,
        "jwks_uri": format!("{url}/jwks"),
        "id_token_signing_alg_values_supported": ["ES256"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    shared.jwks_requests.fetch_add(1, Ordering::SeqCst);
    axum::Json(shared.jwks.lock().unwrap().clone())
}
