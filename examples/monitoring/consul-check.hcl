# A Consul script check running a harun health script on the controller itself.
# Consul reads the exit status (0 passing, 1 warning, anything else critical) and shows
# the first line of output, which harun makes the summary line.
# Needs enable_local_script_checks = true in the agent's config.
check {
  id       = "harun-health"
  name     = "harun health"
  args     = ["/usr/local/bin/harun", "--topology", "/etc/harun/harun.hcl", "--timeout", "50s", "/etc/harun/scripts/health.rhai"]
  interval = "60s"
  timeout  = "55s"
}
