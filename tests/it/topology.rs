//! The topology file becomes the `topology` global; its errors point at file and line.

use crate::common;

use common::Test;

const TOPOLOGY: &str = r#"# the story's three controllers
defaults {
  ssh_user = "pi"
  service_manager = "sudo rc-service {service} {action}"
}
consul { address = "https://{address}:8501" }
vault  { raft_path = "/vault_data" }
host "controller1" { address = "10.0.0.11" }
host "controller2" {}
host "controller3" {
  address  = "10.0.0.13"
  ssh_user = "admin"
  vault { config_file = "/opt/vault/etc/vault.hcl" }
}
"#;

#[test]
fn hosts_in_file_order_with_merged_settings() {
    Test::new()
        .file("harun.hcl", TOPOLOGY)
        .file(
            "t.rhai",
            r#"
for h in topology.hosts {
    print(`${h.name} ${h.address} ${h.ssh_user} ${h.consul.address} ${h.vault.config_file} ${h.vault.raft_path}`);
}
print(topology.hosts[0].service_manager);
"#,
        )
        .args(["t.rhai"])
        .run()
        .status(0)
        .stdout(
            "controller1 10.0.0.11 pi https://10.0.0.11:8501 /etc/vault.d/vault.hcl /vault_data
controller2 controller2 pi https://controller2:8501 /etc/vault.d/vault.hcl /vault_data
controller3 10.0.0.13 admin https://10.0.0.13:8501 /opt/vault/etc/vault.hcl /vault_data
sudo rc-service {service} {action}
",
        );
}

#[test]
fn hosts_by_role_treat_a_host_without_roles_as_a_controller() {
    let topology = "host \"c1\" {}\nhost \"c2\" {\n  roles = [\"controller\", \"dns\"]\n}\nhost \"w1\" {\n  roles = [\"worker\"]\n}\n";
    Test::new()
        .file("harun.hcl", topology)
        .args([
            "-e",
            r#"print(hosts("controller")); print(hosts("worker")); print(hosts("dns")); print(hosts().len())"#,
        ])
        .run()
        .status(0)
        .stdout("[host(c1), host(c2)]\n[host(w1)]\n[host(c2)]\n3\n");
}

#[test]
fn topology_flag_and_environment_choose_the_file() {
    let t = Test::new().file("site/prod.hcl", "host \"a\" { address = \"10.1.1.1\" }\n");
    t.args([
        "--topology",
        "site/prod.hcl",
        "-e",
        "topology.hosts[0].address",
    ])
    .run()
    .status(0)
    .stdout("10.1.1.1\n");
    Test::new()
        .file("site/prod.hcl", "host \"b\" {}\n")
        .env("HARUN_TOPOLOGY", "site/prod.hcl")
        .args(["-e", "topology.hosts[0].name"])
        .run()
        .status(0)
        .stdout("b\n");
    // No topology file: an empty host list, not an error.
    Test::new()
        .args(["-e", "topology.hosts.len()"])
        .run()
        .status(0)
        .stdout("0\n");
}

#[test]
fn topology_errors_point_at_file_and_line() {
    Test::new()
        .file(
            "harun.hcl",
            "defaults {\n  ssh_user = \"pi\"\n  ssh_prot = 22\n}\n",
        )
        .args(["-e", "1"])
        .run()
        .status(3)
        .stderr_has("error[harun::topology]: unknown setting `ssh_prot`")
        .stderr_has(" --> harun.hcl:3:3\n");
    // The place, never the line: the line may be the one with the token.
    let literal = Test::new()
        .file("harun.hcl", "vault {\n  token = \"hvs.abc\"\n}\n")
        .args(["-e", "1"])
        .run()
        .status(3)
        .stderr_has("a literal token does not belong in the topology")
        .stderr_has("--> harun.hcl:2:3");
    assert!(!literal.stderr.contains("hvs.abc"), "{}", literal.stderr);
    Test::new()
        .file("harun.hcl", "host \"a\" {\n  address = [\n}\n")
        .args(["-e", "1"])
        .run()
        .status(3)
        .stderr_has("error[harun::topology::syntax]")
        .stderr_has("--> harun.hcl:");
    Test::new()
        .args(["--topology", "nope.hcl", "-e", "1"])
        .run()
        .status(3)
        .stderr_has("cannot read the topology file nope.hcl");
    // `flavor` says which server speaks Vault's API: only there, only these two.
    Test::new()
        .file(
            "harun.hcl",
            "consul {
  flavor = \"openbao\"
}
",
        )
        .args(["-e", "1"])
        .run()
        .status(3)
        .stderr_has("`flavor` belongs in the vault block, not in `consul`")
        .stderr_has("--> harun.hcl:2:3");
    Test::new()
        .file(
            "harun.hcl",
            "vault {
  flavor = \"bao\"
}
",
        )
        .args(["-e", "1"])
        .run()
        .status(3)
        .stderr_has("`flavor` must be one of vault, openbao")
        .stderr_has("--> harun.hcl:2:");
}
