//! The nomad module on the lab: node drains that end (and one that never does, which
//! fails the wait in time), eligibility, and job status.

use crate::common;

use common::lab::Lab;
use common::Test;

fn run(lab: &Lab, script: &str) -> common::Outcome {
    let topology = lab.dir.join("harun.hcl");
    Test::new()
        .args(["--topology", topology.to_str().unwrap(), "-e", script])
        .run()
}

#[test]
fn a_drain_ends_at_its_deadline_and_leaves_the_node_ineligible() {
    let lab = Lab::up();
    let out = run(
        &lab,
        r#"let c1 = host("controller1");
nomad::wait_nodes_ready(c1, 1, 10.0);
let id = nomad::node_ids(c1)["controller1"];
nomad::drain(c1, id, 2);
let n = nomad::node(c1, id);
print(`${n.DrainStrategy != ()} ${n.SchedulingEligibility} ${n.LastDrain.Status}`);
try { nomad::eligibility(c1, id, true) } catch (e) { print(e.message) }
print(nomad::wait_drained(c1, id, 20.0));
let n = nomad::node(c1, id);
print(`${n.DrainStrategy != ()} ${n.SchedulingEligibility}`);
nomad::eligibility(c1, id, true);
print(nomad::node(c1, id).SchedulingEligibility);"#,
    )
    .status(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "true ineligible draining", "{}", out.stdout);
    assert!(
        lines[1].ends_with(
            "answered 500: can not set node's scheduling eligibility to eligible while it is draining"
        ),
        "{}",
        out.stdout
    );
    assert_eq!(
        &lines[2..],
        ["complete", "false ineligible", "eligible"],
        "{}",
        out.stdout
    );
}

/// A drain without a deadline on a node with nothing to move ends at once, as Nomad's
/// drainer ends it (nomad/drainer/watch_nodes.go); the node stays ineligible until it is
/// marked eligible again. (Controller1's Nomad runs the homelab's jobs; controller2's,
/// stopped in the story's first state, starts as a cluster of its own with none.)
#[test]
fn a_drain_of_an_empty_node_ends_at_once_and_leaves_it_ineligible() {
    let lab = Lab::up();
    assert!(lab.ctl("controller2", "nomad", "start").status.success());
    let out = run(
        &lab,
        r#"let c2 = host("controller2");
nomad::wait_nodes_ready(c2, 1, 10.0);
let id = nomad::node_ids(c2)["controller2"];
print(nomad::allocations(c2, id).len());
nomad::drain(c2, id, 0);
print(nomad::wait_drained(c2, id, 5.0));
print(nomad::node(c2, id).SchedulingEligibility);
nomad::undrain(c2, id);
print(nomad::node(c2, id).SchedulingEligibility);"#,
    )
    .status(0);
    assert_eq!(out.stdout, "0\ncomplete\nineligible\neligible\n");
    let missing = run(
        &lab,
        r#"nomad::wait_drained(host("controller1"), "00000000-0000-0000-0000-000000000000", 30.0)"#,
    )
    .status(3);
    assert!(
        missing.stderr.contains("harun::nomad::not_found"),
        "{}",
        missing.stderr
    );
}

#[test]
fn jobs_list_and_status() {
    let lab = Lab::up();
    let out = run(
        &lab,
        r#"let c1 = host("controller1");
print(nomad::jobs(c1).map(|j| j.ID));
print(nomad::job_status(c1, "grafana"));
print(nomad::job(c1, "traefik").Type);
try { nomad::job(c1, "nope") } catch (e) { print(e.code); print(e.message) }"#,
    )
    .status(0);
    assert_eq!(
        out.stdout,
        "[\"backup\", \"grafana\", \"traefik\"]\nrunning\nsystem\nharun::nomad::not_found\nnomad on controller1: GET /v1/job/nope answered 404: job not found\n"
    );
}

/// Nomad with `tls { http = true, verify_https_client = true }`: the module trusts the CA
/// from `ca_file` or NOMAD_CACERT, presents the client certificate, and says what is wrong
/// when either is missing.
#[test]
fn the_module_speaks_tls_with_a_ca_and_a_client_certificate() {
    let lab = Lab::up();
    let pki = common::tls::Pki::make(&lab.dir.join("tls"), &lab.address("controller1"));
    lab.set_config("controller1", "nomad", |t| {
        format!(
            "{t}\ntls {{\n  http                = true\n  ca_file             = \"{}\"\n  cert_file           = \"{}\"\n  key_file            = \"{}\"\n  verify_https_client = true\n}}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        )
    });
    assert!(lab.ctl("controller1", "nomad", "restart").status.success());
    // `lab status` reads the node over TLS too, with the node's own certificate.
    let status = lab.status_line("controller1", "nomad");
    assert!(status.ends_with(", leader"), "{status}");
    let plain = std::fs::read_to_string(lab.dir.join("harun.hcl")).unwrap();
    let http = "address     = \"http://{address}:4646\"";
    assert!(plain.contains(http));
    let topology = |settings: &str| {
        plain.replace(
            http,
            &format!("address     = \"https://{{address}}:4646\"\n{settings}"),
        )
    };
    let files = format!(
        "  client_cert = \"{}\"\n  client_key  = \"{}\"\n",
        pki.client_cert.display(),
        pki.client_key.display()
    );
    let ca = format!("  ca_file     = \"{}\"\n", pki.ca.display());
    let script = "print(nomad::wait_leader(host(\"controller1\"), 10.0) != \"\")";
    let run = |topology: String, env: &[(&str, &std::path::Path)]| {
        let mut t = Test::new().file("harun.hcl", &topology);
        for (k, v) in env {
            t = t.env(k, v.to_str().unwrap());
        }
        t.args(["-e", script]).run()
    };
    // From the topology, then from the NOMAD_* variables.
    assert_eq!(
        run(topology(&(ca.clone() + &files)), &[]).status(0).stdout,
        "true\n"
    );
    let from_env = run(
        topology(""),
        &[
            ("NOMAD_CACERT", &pki.ca),
            ("NOMAD_CLIENT_CERT", &pki.client_cert),
            ("NOMAD_CLIENT_KEY", &pki.client_key),
        ],
    );
    assert_eq!(from_env.status(0).stdout, "true\n");
    // tls_skip_verify trusts any server certificate; the client certificate is still needed.
    let skip = topology(&("  tls_skip_verify = true\n".to_string() + &files));
    assert_eq!(run(skip, &[]).status(0).stdout, "true\n");
    // No CA: the server's certificate is refused, and the message says so.
    let once = |topology: String| {
        Test::new()
            .file("harun.hcl", &topology)
            .args(["-e", "nomad::leader(host(\"controller1\"))"])
            .run()
    };
    let unknown = once(topology(&files)).status(3);
    assert!(
        unknown.stderr.contains(&format!("nomad: GET /v1/agent/self on controller1: cannot connect to https://{}:4646: invalid peer certificate: UnknownIssuer (trust its CA with ca_file in the topology or NOMAD_CACERT)", lab.address("controller1"))),
        "{}",
        unknown.stderr
    );
    // No client certificate: Nomad refuses the handshake. Under TLS 1.3 the refusal comes
    // after the client's side of the handshake, so a loaded machine may see the connection
    // closed before the alert is read: either way the remedy is named.
    let refused = once(topology(&ca)).status(3);
    assert!(
        refused.stderr.contains("nomad: GET /v1/agent/self on controller1: received fatal alert: CertificateRequired (it wants a client certificate: client_cert and client_key in the topology, or NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY)")
            || refused.stderr.contains("nomad: GET /v1/agent/self on controller1: connection was not ready (the server closed the connection; if it wants a client certificate: client_cert and client_key in the topology, or NOMAD_CLIENT_CERT and NOMAD_CLIENT_KEY)"),
        "{}",
        refused.stderr
    );
}

/// Certificates made by `nomad tls cert create -server` name `server.global.nomad`, not
/// the host's address: `tls_server_name` (or NOMAD_TLS_SERVER_NAME) checks them against
/// that name while connecting to the address.
#[test]
fn tls_server_name_checks_a_certificate_made_for_a_name() {
    let lab = Lab::up();
    let pki = common::tls::Pki::make_named(
        &lab.dir.join("tls"),
        &["server.global.nomad", "localhost", "127.0.0.1"],
    );
    lab.set_config("controller1", "nomad", |t| {
        format!(
            "{t}\ntls {{\n  http      = true\n  ca_file   = \"{}\"\n  cert_file = \"{}\"\n  key_file  = \"{}\"\n}}\n",
            pki.ca.display(),
            pki.server_cert.display(),
            pki.server_key.display()
        )
    });
    assert!(lab.ctl("controller1", "nomad", "restart").status.success());
    let plain = std::fs::read_to_string(lab.dir.join("harun.hcl")).unwrap();
    let topology = |settings: &str| {
        plain.replace(
            "address     = \"http://{address}:4646\"",
            &format!(
                "address     = \"https://{{address}}:4646\"\n  ca_file     = \"{}\"\n{settings}",
                pki.ca.display()
            ),
        )
    };
    let script = "print(nomad::wait_leader(host(\"controller1\"), 10.0) != \"\")";
    let named = Test::new()
        .file(
            "harun.hcl",
            &topology("  tls_server_name = \"server.global.nomad\"\n"),
        )
        .args(["-e", script])
        .run()
        .status(0);
    assert_eq!(named.stdout, "true\n");
    let from_env = Test::new()
        .file("harun.hcl", &topology(""))
        .env("NOMAD_TLS_SERVER_NAME", "server.global.nomad")
        .args(["-e", script])
        .run()
        .status(0);
    assert_eq!(from_env.stdout, "true\n");
    let unnamed = Test::new()
        .file("harun.hcl", &topology(""))
        .args(["-e", "nomad::leader(host(\"controller1\"))"])
        .run()
        .status(3);
    assert!(
        unnamed.stderr.contains(&format!(
            "cannot connect to https://{}:4646: invalid peer certificate: certificate not valid for name",
            lab.address("controller1")
        )) && !unnamed.stderr.contains("ERROR") && unnamed.stderr.contains(
            "(its certificate does not name this address: set tls_server_name in the topology, or NOMAD_TLS_SERVER_NAME, to a name it holds)"
        ),
        "{}",
        unnamed.stderr
    );
}
