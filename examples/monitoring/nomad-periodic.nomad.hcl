# A Nomad periodic job running the health script from a host with harun installed.
job "harun-health" {
  type = "batch"
  periodic {
    crons            = ["*/5 * * * *"]
    prohibit_overlap = true
  }
  group "check" {
    task "harun" {
      driver = "raw_exec"
      config {
        command = "/usr/local/bin/harun"
        args    = ["--timeout", "4m", "--topology", "/etc/harun/harun.hcl", "/etc/harun/scripts/health.rhai"]
      }
    }
  }
}
