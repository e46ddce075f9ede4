# Prometheus and Alertmanager for faasgate's autoscaling, as OpenFaaS ships them:
# Prometheus scrapes every faasgate instance found in Nomad's service catalog, fires
# APIHighInvocationRate when a function serves more than 5 successful requests per second,
# and Alertmanager posts the alert (and its resolution) to faasgate's /system/alert.
#
# Secrets from Nomad Variables, readable by this job only:
#
#   nomad var put nomad/jobs/faasgate-monitoring \
#     nomad_token=<secret id of a token with read-job, for service discovery> \
#     basic_auth_password=<the faasgate admin password>
#
#   nomad job run nomad/monitoring.nomad.hcl
#
# Nomad templates use [[ ]] as delimiters here, so Prometheus' own {{ }} templates in the
# alert annotations pass through untouched.

job "faasgate-monitoring" {
  type        = "service"
  datacenters = ["*"]

  group "prometheus" {
    count = 1

    network {
      port "http" {
        to = 9090
      }
    }

    service {
      name     = "prometheus"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/-/healthy"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "prometheus" {
      driver = "docker"

      config {
        image = "prom/prometheus:v2.53.0"
        ports = ["http"]
        args = [
          "--config.file=/local/prometheus.yml",
          "--storage.tsdb.retention.time=2d",
          "--web.enable-lifecycle",
        ]
      }

      template {
        data            = <<-EOT
          global:
            scrape_interval: 15s
            evaluation_interval: 5s
            external_labels:
              monitor: faas-monitor

          rule_files:
            - /local/alert.rules.yml

          alerting:
            alertmanagers:
              - nomad_sd_configs:
                  - server: 'http://[[ env "attr.unique.network.ip-address" ]]:4646'
                    authorization:
                      credentials_file: /secrets/nomad-token
                relabel_configs:
                  - source_labels: [__meta_nomad_service]
                    regex: alertmanager
                    action: keep

          scrape_configs:
            - job_name: faasgate
              scrape_interval: 5s
              metrics_path: /metrics
              nomad_sd_configs:
                - server: 'http://[[ env "attr.unique.network.ip-address" ]]:4646'
                  authorization:
                    credentials_file: /secrets/nomad-token
              relabel_configs:
                - source_labels: [__meta_nomad_service]
                  regex: faasgate
                  action: keep
                - source_labels: [__meta_nomad_node_id]
                  target_label: node
          EOT
        destination     = "local/prometheus.yml"
        left_delimiter  = "[["
        right_delimiter = "]]"
        change_mode     = "restart"
      }

      template {
        data            = <<-EOT
          groups:
            - name: faasgate
              rules:
                - alert: APIHighInvocationRate
                  expr: sum(rate(gateway_function_invocation_total{code="200"}[10s])) BY (function_name) > 5
                  for: 5s
                  labels:
                    service: gateway
                    severity: major
                  annotations:
                    description: High invocation total on {{ $labels.function_name }}
                    summary: High invocation total on {{ $labels.function_name }}
          EOT
        destination     = "local/alert.rules.yml"
        left_delimiter  = "[["
        right_delimiter = "]]"
        change_mode     = "restart"
      }

      template {
        data            = <<-EOT
          [[- with nomadVar "nomad/jobs/faasgate-monitoring" ]][[ .nomad_token ]][[ end -]]
          EOT
        destination     = "secrets/nomad-token"
        left_delimiter  = "[["
        right_delimiter = "]]"
        change_mode     = "restart"
      }

      resources {
        cpu    = 300
        memory = 512
      }
    }
  }

  group "alertmanager" {
    count = 1

    network {
      port "http" {
        to = 9093
      }
    }

    service {
      name     = "alertmanager"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/-/healthy"
        interval = "10s"
        timeout  = "2s"
      }
    }

    task "alertmanager" {
      driver = "docker"

      config {
        image = "prom/alertmanager:v0.27.0"
        ports = ["http"]
        args  = ["--config.file=/local/alertmanager.yml"]
      }

      # The webhook goes to the faasgate on this node: the system job runs one on every
      # client, so the node's own address always has a gateway on port 8080.
      template {
        data            = <<-EOT
          route:
            group_by: ['alertname', 'cluster', 'service']
            group_wait: 5s
            group_interval: 10s
            repeat_interval: 30s
            receiver: scale-up
            routes:
              - matchers: ['service="gateway"', 'severity="major"']
                receiver: scale-up

          inhibit_rules:
            - source_matchers: ['severity="critical"']
              target_matchers: ['severity="warning"']
              equal: ['alertname', 'cluster', 'service']

          receivers:
            - name: scale-up
              webhook_configs:
                - url: 'http://[[ env "attr.unique.network.ip-address" ]]:8080/system/alert'
                  send_resolved: true
                  http_config:
                    basic_auth:
                      username: admin
                      password_file: /secrets/basic-auth-password
          EOT
        destination     = "local/alertmanager.yml"
        left_delimiter  = "[["
        right_delimiter = "]]"
        change_mode     = "restart"
      }

      template {
        data            = <<-EOT
          [[- with nomadVar "nomad/jobs/faasgate-monitoring" ]][[ .basic_auth_password ]][[ end -]]
          EOT
        destination     = "secrets/basic-auth-password"
        left_delimiter  = "[["
        right_delimiter = "]]"
        change_mode     = "restart"
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }
}
