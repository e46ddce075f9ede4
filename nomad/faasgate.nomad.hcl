# faasgate as a Nomad system job: one gateway on every client node, listening on the
# node's address at port 8080, running functions as Nomad jobs (`--provider nomad`).
#
# Driver: `exec`, running the faasgate binary installed on each client at
# /usr/local/bin/faasgate (the same binary the `exec`/`raw_exec` function jobs run as their
# watchdog, so one install serves both). `exec` is enabled by default on Linux clients and
# isolates the gateway (chroot, cgroups) without needing Docker or enabling `raw_exec`;
# /usr/local/bin is inside exec's default chroot. No image registry or download is involved,
# so the job runs as soon as the binary is on the nodes:
#
#   install -m 0755 target/release/faasgate /usr/local/bin/faasgate     # on every client
#
# To fetch the binary instead, add an `artifact { source = "<url of a faasgate tarball>" }`
# block to the task and set `command = "local/faasgate"`.
#
# Secrets come from Nomad Variables, readable by this job only (its workload identity may
# read nomad/jobs/faasgate):
#
#   nomad var put nomad/jobs/faasgate \
#     nomad_token=<secret id of a token with submit-job, read-job, scale-job, list-jobs> \
#     basic_auth_password=<password for /system/* and the UI>
#
# The gateways elect the one that makes scale decisions with a lock on the Nomad Variable
# faasgate/leader (`--cluster-lock`), so that token also needs `write` on that path; the
# policy is in docs/nomad.md ("Several gateways"). Every gateway must have the same
# basic-auth password: they call each other's /system/cluster routes with it.
#
#   nomad job run nomad/faasgate.nomad.hcl
#
# Prometheus and Alertmanager for autoscaling: nomad/monitoring.nomad.hcl.

job "faasgate" {
  type = "system"

  # Every client node in every datacenter; narrow this as needed.
  datacenters = ["*"]

  constraint {
    attribute = "${attr.kernel.name}"
    value     = "linux"
  }

  update {
    max_parallel = 1
    stagger      = "10s"
  }

  group "gateway" {
    network {
      mode = "host"

      port "http" {
        static = 8080
      }
    }

    service {
      name     = "faasgate"
      provider = "nomad"
      port     = "http"
      tags     = ["faasgate", "metrics"]

      check {
        name     = "faasgate healthz"
        type     = "http"
        path     = "/healthz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "faasgate" {
      driver = "exec"

      config {
        command = "/usr/local/bin/faasgate"
        args    = ["serve", "--provider", "nomad", "--listen", "${NOMAD_ADDR_http}"]
      }

      env {
        # This node's Nomad agent; it forwards to the servers.
        NOMAD_ADDR               = "http://${attr.unique.network.ip-address}:4646"
        FAASGATE_BASIC_AUTH_USER = "admin"
        RUST_LOG                 = "info"
      }

      # NOMAD_TOKEN and FAASGATE_BASIC_AUTH_PASSWORD, from Nomad Variables, into the task's
      # environment. The rendered file lives in the task's secrets/ directory, which is
      # private to the task and never in the alloc's shared dir.
      template {
        data        = <<-EOT
          {{- with nomadVar "nomad/jobs/faasgate" }}
          NOMAD_TOKEN={{ .nomad_token }}
          FAASGATE_BASIC_AUTH_PASSWORD={{ .basic_auth_password }}
          {{- end }}
          EOT
        destination = "secrets/faasgate.env"
        env         = true
        change_mode = "restart"
      }

      resources {
        cpu    = 500
        memory = 256
      }

      # The Nomad client's default max_kill_timeout is 30s: a longer value here would be cut
      # to it silently. In-flight requests get this long to finish after SIGTERM; for
      # longer ones raise the clients' max_kill_timeout and this together.
      kill_timeout = "30s"
    }
  }
}
