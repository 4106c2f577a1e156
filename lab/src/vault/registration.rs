//! `service_registration "consul"`: what a real Vault sends to its local Consul agent: the
//! `vault` service tagged active or standby (and initialized), a TTL check that passes
//! while unsealed, and a deregistration on shutdown.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{host_port, Node, Registration};

fn service_id(node: &Node, r: &Registration) -> String {
    format!("{}:{}", r.service, host_port(&node.settings.api_addr))
}

fn put(client: &reqwest::Client, r: &Registration, path: &str) -> reqwest::RequestBuilder {
    let mut request = client.put(format!("{}{path}", r.agent));
    if let Some(token) = &r.token {
        request = request.header("X-Consul-Token", token);
    }
    request
}

/// Keeps the registration in step with the node's state until the task is aborted.
pub async fn run(node: Arc<Node>, r: Registration) {
    let client = match r.client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return;
        }
    };
    let id = service_id(&node, &r);
    let check_id = format!("{id}:vault-sealed-check");
    let api = host_port(&node.settings.api_addr);
    let (host, port) = api.rsplit_once(':').unwrap_or((&api, "8200"));
    let port: u16 = port.parse().unwrap_or(8200);
    let mut registered: Option<Vec<String>> = None;
    let mut ticks: u64 = 0;
    loop {
        let mut tags = r.tags.clone();
        tags.push(if node.active() { "active" } else { "standby" }.to_string());
        if node.initialized() {
            tags.push("initialized".to_string());
        }
        let sealed = node.sealed();
        if registered.as_ref() != Some(&tags) {
            let service = json!({
                "ID": id, "Name": r.service, "Tags": tags, "Port": port, "Address": host,
                "Meta": {"external-source": "vault"},
            });
            let check = json!({
                "ID": check_id, "Name": "Vault Sealed Status",
                "Notes": "Vault service is healthy when Vault is in an unsealed status and can become an active Vault server",
                "ServiceID": id, "TTL": "5s",
                "Status": if sealed { "critical" } else { "passing" },
            });
            let ok = async {
                let a = put(&client, &r, "/v1/agent/service/register")
                    .json(&service)
                    .send()
                    .await
                    .ok()?;
                let b = put(&client, &r, "/v1/agent/check/register")
                    .json(&check)
                    .send()
                    .await
                    .ok()?;
                (a.status().is_success() && b.status().is_success()).then_some(())
            }
            .await;
            match ok {
                Some(()) => registered = Some(tags),
                None => tracing::warn!(
                    "service registration at {} failed (the agent does not answer, refuses the token, or its certificate is not trusted); retrying",
                    r.agent
                ),
            }
        }
        ticks += 1;
        if ticks % 3 != 1 {
            // State changes are registered within half a second; the TTL is refreshed
            // every 1.5 s, well inside its 5 s.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let path = if sealed {
            format!("/v1/agent/check/fail/{check_id}?note=Vault+Sealed")
        } else {
            format!("/v1/agent/check/pass/{check_id}?note=Vault+Unsealed")
        };
        if let Ok(reply) = put(&client, &r, &path).send().await {
            if reply.status().as_u16() == 404 {
                // The agent lost it (restarted without its state): register again.
                registered = None;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn deregister(node: &Node, r: &Registration) {
    let id = service_id(node, r);
    let Ok(client) = r.client() else { return };
    let _ = put(&client, r, &format!("/v1/agent/service/deregister/{id}"))
        .send()
        .await;
}
