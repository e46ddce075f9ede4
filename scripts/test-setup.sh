#!/usr/bin/env bash
# Installs what `cargo test` needs beyond a Rust toolchain, when missing (Debian, as root):
# python3 (example functions, some tests), Chromium with its WebDriver for the UI test
# (tests/ui_browser.rs drives /usr/bin/chromium through /usr/bin/chromedriver), and the real
# Prometheus and Alertmanager for the alert-scaling test (tests/prometheus.rs), and nginx, the
# reference front end of the differential wire test (tests/differential_wire.rs), and
# nats-server, the JetStream queue of the async tests (tests/it/async_nats.rs).
set -euo pipefail

missing=()
command -v python3 >/dev/null || missing+=(python3)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v prometheus >/dev/null || missing+=(prometheus)
command -v prometheus-alertmanager >/dev/null || missing+=(prometheus-alertmanager)
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx-light)
[ -x /usr/sbin/nats-server ] || command -v nats-server >/dev/null || missing+=(nats-server)

if [ ${#missing[@]} -gt 0 ]; then
    echo "test-setup: installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
