//! Calls to the events API (`/events/*`) as an E2B user makes them, with `X-API-Key`.

use serde_json::Value;
use std::time::Duration;

/// (status, JSON body or `Value::Null`) of `method path` on the loopback `port`.
pub fn api_call(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request =
            reqwest::Client::new().request(method, format!("http://127.0.0.1:{port}{path}"));
        if let Some(key) = key {
            request = request.header("X-API-Key", key);
        }
        if let Some(body) = body {
            request = request
                .header("Content-Type", "application/json")
                .body(body.to_string());
        }
        match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    })
}

/// Waits until the API answers this key (the schema is migrated).
pub fn wait_for_api(port: u16, key: &str) {
    assert!(
        super::eventually(Duration::from_secs(30), || {
            api_call(port, "GET", "/events/webhooks", Some(key), None).0 == 200
        }),
        "the events API never answered 200"
    );
}
