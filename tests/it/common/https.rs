//! HTTPS calls for the tests of the lab's story configuration: a client that trusts only
//! the lab's CA, as an operator's `VAULT_CACERT` / `CONSUL_CACERT` would.

use std::path::Path;
use std::time::Duration;

use super::http::Reply;

pub struct Https {
    client: reqwest::blocking::Client,
}

impl Https {
    pub fn trusting(ca: &Path) -> Https {
        Https::trusting_within(ca, Duration::from_secs(10))
    }

    /// `trusting`, with another time limit per request.
    pub fn trusting_within(ca: &Path, timeout: Duration) -> Https {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pem = std::fs::read(ca).unwrap();
        let client = reqwest::blocking::Client::builder()
            .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
            .timeout(timeout)
            .no_proxy()
            .build()
            .unwrap();
        Https { client }
    }

    pub fn call(&self, method: &str, url: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(method, url, body, headers)
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
    }

    /// `call`, with a failed request as an error rather than a panic.
    pub fn request(
        &self,
        method: &str,
        url: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let mut request = self
            .client
            .request(method.parse().unwrap(), url)
            .body(body.to_string());
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let response = request.send().map_err(|e| format!("{e:?}"))?;
        let status = response.status().as_u16();
        let headers = format!("{:?}", response.headers());
        Ok(Reply {
            status,
            headers,
            body: response.text().unwrap_or_default(),
        })
    }
}
