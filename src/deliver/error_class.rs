//! What went wrong with one attempt, in the classes E2B's delivery log names (`errorClass` of
//! `WebhookDelivery` in E2B's events API document): an answer other than 2xx, a name that did
//! not resolve, the deadline, the connection, a request that was never sent, a shutdown.

use std::error::Error as StdError;

/// Why an attempt failed, as E2B's delivery log classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The endpoint answered with a status other than 2xx.
    Http,
    /// The endpoint's name did not resolve.
    Dns,
    /// No complete answer before the attempt's deadline (connecting included).
    Timeout,
    /// Connecting, TLS, or the connection failed (refused, reset, closed mid-answer).
    Transport,
    /// The request was not sent: the URL guard refused the address, or it could not be built.
    Request,
    /// The service stopped before the endpoint answered; the event is tried again after the
    /// restart.
    Canceled,
}

impl ErrorClass {
    /// Every class, with its name in E2B's document.
    pub const ALL: [(ErrorClass, &'static str); 6] = [
        (ErrorClass::Http, "http_error"),
        (ErrorClass::Dns, "dns_error"),
        (ErrorClass::Timeout, "timeout"),
        (ErrorClass::Transport, "transport_error"),
        (ErrorClass::Request, "request_error"),
        (ErrorClass::Canceled, "canceled"),
    ];

    /// The name E2B's document uses (`http_error`, `dns_error`, …).
    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(class, _)| *class == self)
            .map(|(_, name)| *name)
            .expect("every class is listed")
    }
}

/// Why no answer came: the class of a failure below HTTP (a status is [`ErrorClass::Http`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkFailure {
    /// Resolving the name failed.
    Dns,
    /// The connection failed.
    Transport,
    /// Refused before sending: the URL guard, or a request that cannot be built.
    Request,
}

impl From<NetworkFailure> for ErrorClass {
    fn from(failure: NetworkFailure) -> Self {
        match failure {
            NetworkFailure::Dns => Self::Dns,
            NetworkFailure::Transport => Self::Transport,
            NetworkFailure::Request => Self::Request,
        }
    }
}

/// What hyper-util's connector calls a failed resolution (`ConnectError::dns`); the type itself
/// is private, its message is what it exposes.
const HYPER_DNS_ERROR: &str = "dns error";

/// The class of a failed send that is not a timeout (reqwest reports those itself).
pub fn classify(error: &reqwest::Error) -> NetworkFailure {
    if error.is_builder() {
        return NetworkFailure::Request;
    }
    classify_chain(error)
}

/// Walks the causes: the URL guard's refusal (raised by the guarded resolver) is a request that
/// was refused, a failed resolution a DNS error, anything else a transport failure.
fn classify_chain(error: &(dyn StdError + 'static)) -> NetworkFailure {
    let mut dns = false;
    let mut cause: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<crate::util::destination::DestinationError>() {
            return NetworkFailure::Request;
        }
        dns |= e.to_string() == HYPER_DNS_ERROR;
        cause = e.source();
    }
    if dns {
        NetworkFailure::Dns
    } else {
        NetworkFailure::Transport
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::guarded_dns::GuardedResolver;
    use crate::util::destination::DestinationPolicy;
    use reqwest::dns::{Name, Resolve, Resolving};
    use std::sync::Arc;

    /// A resolver that always fails, as a name that does not exist does.
    struct NoSuchName;

    impl Resolve for NoSuchName {
        fn resolve(&self, _: Name) -> Resolving {
            Box::pin(async {
                Err::<reqwest::dns::Addrs, _>(
                    std::io::Error::other("failed to lookup address information").into(),
                )
            })
        }
    }

    async fn failure(client: reqwest::Client, url: &str) -> NetworkFailure {
        classify(&client.post(url).send().await.unwrap_err())
    }

    #[test]
    fn names_are_the_documents() {
        let names: Vec<&str> = ErrorClass::ALL.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            names,
            [
                "http_error",
                "dns_error",
                "timeout",
                "transport_error",
                "request_error",
                "canceled"
            ]
        );
        assert_eq!(ErrorClass::from(NetworkFailure::Dns), ErrorClass::Dns);
        assert_eq!(
            ErrorClass::from(NetworkFailure::Transport),
            ErrorClass::Transport
        );
        assert_eq!(
            ErrorClass::from(NetworkFailure::Request),
            ErrorClass::Request
        );
    }

    #[tokio::test]
    async fn a_failed_resolution_is_a_dns_error() {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(NoSuchName))
            .build()
            .unwrap();
        assert_eq!(
            failure(client, "http://no-such-host.invalid/hook").await,
            NetworkFailure::Dns
        );
    }

    #[tokio::test]
    async fn the_url_guard_refusing_a_name_is_a_request_error() {
        let client = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver::new(DestinationPolicy::new(
                vec![],
            ))))
            .build()
            .unwrap();
        assert_eq!(
            failure(client, "http://localhost:9/hook").await,
            NetworkFailure::Request
        );
    }

    #[tokio::test]
    async fn a_refused_or_reset_connection_is_a_transport_error() {
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = reqwest::Client::new();
        assert_eq!(
            failure(client.clone(), &format!("http://127.0.0.1:{port}/")).await,
            NetworkFailure::Transport
        );
        // A server that closes the connection without answering.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                drop(socket);
            }
        });
        assert_eq!(
            failure(client, &format!("http://{addr}/")).await,
            NetworkFailure::Transport
        );
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_a_request_error() {
        let error = reqwest::Client::new()
            .post("http://127.0.0.1:9/")
            .header("x-bad", "line\nbreak")
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify(&error), NetworkFailure::Request);
    }
}
