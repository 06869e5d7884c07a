//! How this server calls clients (the relay of client routes): plain HTTP, or with TLS
//! HTTPS that presents the server's certificate and accepts only a client's (or a
//! combined agent's server certificate).

use std::sync::Arc;
use std::time::Duration;

use orch_common::tls::{Role, Tls};

/// How long connecting to a client may take (the answer itself may stream for long).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How this server calls clients: plain HTTP, or HTTPS with its certificate.
#[derive(Clone)]
pub struct Relay {
    http: reqwest::Client,
    scheme: &'static str,
}

impl Relay {
    pub fn new(tls: Option<&Arc<Tls>>) -> Result<Relay, reqwest::Error> {
        let builder = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        Ok(match tls {
            None => Relay {
                http: builder.build()?,
                scheme: "http",
            },
            Some(tls) => Relay {
                http: builder
                    .use_preconfigured_tls(
                        tls.client_config_for_roles(&[Role::Client, Role::Server]),
                    )
                    .build()?,
                scheme: "https",
            },
        })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.http
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &'static str {
        self.scheme
    }
}
