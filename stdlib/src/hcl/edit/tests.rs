//! The story's edits on realistic config files: what changes is exactly what was asked,
//! and every comment and untouched line stays byte for byte.

use super::*;

const CONSUL: &str = r#"# Consul server on controller1 -- managed by hand until now
datacenter = "homelab"
data_dir   = "/opt/consul"   # keep on the SSD

server           = true
bootstrap_expect = 1   # single server for now

bind_addr   = "0.0.0.0"
client_addr = "127.0.0.1"

ui_config {
  enabled = true
}

ports {
  https = 8501
}
"#;

const VAULT: &str = r#"# Vault on controller1
ui = true

# file storage: simple, but no HA
storage "file" {
  path = "/vault_storage"
}

listener "tcp" {
  address       = "0.0.0.0:8200"
  tls_cert_file = "/etc/vault.d/tls/vault.crt"   # from the homelab CA
  tls_key_file  = "/etc/vault.d/tls/vault.key"
}

api_addr = "https://controller1:8200"
"#;

const NOMAD: &str = r#"data_dir = "/opt/nomad"

server {
  enabled          = true
  bootstrap_expect = 1
}

client {
  enabled = true
}
"#;

fn set(doc: &mut Document, path: &str, value: hcl::Value) {
    doc.set(path, &value).unwrap();
}

fn untouched_lines_kept(before: &str, after: &str, changed: &[&str]) {
    for line in before.lines() {
        if changed.iter().any(|c| line.contains(c)) {
            continue;
        }
        assert!(after.contains(line), "lost line {line:?} in\n{after}");
    }
}

#[test]
fn consul_retry_join_and_bootstrap_expect() {
    let mut doc = Document::parse(CONSUL).unwrap();
    set(&mut doc, "bootstrap_expect", hcl::Value::from(3));
    set(
        &mut doc,
        "retry_join",
        hcl::Value::from(vec!["controller1", "controller2", "controller3"]),
    );
    assert!(
        !doc.set("server", &hcl::Value::from(true)).unwrap(),
        "unchanged value is no change"
    );
    let out = doc.render();
    untouched_lines_kept(CONSUL, &out, &["bootstrap_expect"]);
    insta::assert_snapshot!(out);
}

#[test]
fn vault_file_storage_becomes_raft() {
    let mut doc = Document::parse(VAULT).unwrap();
    let raft = body_from(&[
        ("path".into(), hcl::Value::from("/vault_data")),
        ("node_id".into(), hcl::Value::from("controller1")),
        (
            "retry_join".into(),
            hcl::Value::Array(
                ["controller1", "controller2", "controller3"]
                    .iter()
                    .map(|h| {
                        let mut m = hcl::Map::new();
                        m.insert(
                            "leader_api_addr".to_string(),
                            hcl::Value::from(format!("https://{h}:8200")),
                        );
                        hcl::Value::Object(m)
                    })
                    .collect(),
            ),
        ),
    ])
    .unwrap();
    assert!(doc
        .replace_block("storage[file]", "storage[raft]", &raft)
        .unwrap());
    set(&mut doc, "disable_mlock", hcl::Value::from(true));
    set(
        &mut doc,
        "cluster_addr",
        hcl::Value::from("https://controller1:8201"),
    );
    let registration = body_from(&[
        ("address".into(), hcl::Value::from("127.0.0.1:8501")),
        ("scheme".into(), hcl::Value::from("https")),
    ])
    .unwrap();
    doc.set_block("service_registration[consul]", &registration)
        .unwrap();
    let out = doc.render();
    untouched_lines_kept(VAULT, &out, &["storage \"file\"", "/vault_storage"]);
    assert!(
        out.contains("# file storage: simple, but no HA\nstorage \"raft\" {"),
        "{out}"
    );
    insta::assert_snapshot!(out);
    // Replacing a block keeps its place and its leading comment.
    let mut again = Document::parse(&out).unwrap();
    let before = again.render();
    assert!(
        !again.set_block("storage[raft]", &raft).unwrap(),
        "same block, no change"
    );
    assert!(
        !again
            .replace_block("storage[file]", "storage[raft]", &raft)
            .unwrap(),
        "a second run of the same replacement changes nothing"
    );
    assert_eq!(again.render(), before);
}

#[test]
fn nomad_nested_settings() {
    let mut doc = Document::parse(NOMAD).unwrap();
    set(&mut doc, "server.bootstrap_expect", hcl::Value::from(3));
    let join = body_from(&[(
        "retry_join".into(),
        hcl::Value::from(vec!["controller1", "controller2", "controller3"]),
    )])
    .unwrap();
    doc.set_block("server.server_join", &join).unwrap();
    doc.set_block("client.server_join", &join).unwrap();
    let out = doc.render();
    untouched_lines_kept(NOMAD, &out, &["bootstrap_expect"]);
    insta::assert_snapshot!(out);
    assert_eq!(
        doc.get("server.bootstrap_expect").unwrap(),
        Some(hcl::Value::from(3))
    );
}

#[test]
fn paths_are_checked() {
    assert!(parse_path("storage[raft].path").is_ok());
    assert_eq!(
        parse_path("storage[\"raft\"]").unwrap()[0].labels,
        vec!["raft".to_string()]
    );
    assert!(parse_path("a..b").is_err());
    assert!(parse_path("a[b").is_err());
    assert!(Document::parse("a = \n").unwrap_err().starts_with("line 1"));
}
