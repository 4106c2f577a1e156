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
  address     = "https://{address}:4646"
  config_file = "/etc/nomad.d/nomad.hcl"
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
