# The story's three controllers (../reference homelab story): three Raspberry Pis, each
# running a Consul, Nomad and Vault server. Copy this file to ./harun.hcl and change the
# addresses; every setting below can be overridden per host.
defaults {
  ssh_user        = "pi"          # ~/.ssh/config is honoured as well
  transport       = "ssh"         # ssh | local
  known_hosts     = "strict"      # strict | accept-new
  service_manager = "systemd"     # systemd | openrc | "sudo rc-service {service} {action}"
  sudo            = true
}

consul {
  address     = "https://{address}:8501"
  config_file = "/etc/consul.d/consul.hcl"
  token_file  = "/etc/harun/consul.token"   # a path, never the token itself
}

nomad {
  address         = "https://{address}:4646"
  config_file     = "/etc/nomad.d/nomad.hcl"
  tls_server_name = "server.global.nomad"    # what `nomad tls cert create -server` names
}

vault {
  address         = "https://{address}:8200"
  cluster_address = "https://{address}:8201"
  config_file     = "/etc/vault.d/vault.hcl"
  raft_path       = "/vault_data"
  user            = "vault"
}

host "controller1" { address = "controller1" }
host "controller2" { address = "controller2" }
host "controller3" {
  address = "controller3"
  # vault { config_file = "/opt/vault/etc/vault.hcl" }   # per-host override
}

# A machine that runs only a Nomad client and a Consul client agent. Hosts without
# `roles` are controllers; the HA scripts take hosts("controller"), and nomad-ha.rhai
# gives client-only agents the servers in client.server_join when Nomad runs without
# Consul.
host "worker1" {
  address = "worker1"
  roles   = ["worker"]
  nomad { tls_server_name = "client.global.nomad" }
}
