#!/usr/bin/env bash
# Installs what `cargo test` needs beyond a Rust toolchain, when missing (Debian, as root):
# python3 (example functions, some tests), Chromium with its WebDriver for the UI test
# (tests/ui_browser.rs drives /usr/bin/chromium through /usr/bin/chromedriver), and the real
# Prometheus and Alertmanager for the alert-scaling test (tests/prometheus.rs), and nginx, the
# reference front end of the differential wire test (tests/differential_wire.rs), nats-server,
# the JetStream queue of the async tests (tests/it/async_nats.rs); and, from PyPI, the Apache
# Airflow OpenFaaS provider in a venv for the Airflow client test (tests/it/airflow_hook.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v python3 >/dev/null || missing+=(python3)
# Debian's python3 makes venvs only with python3-venv (ensurepip).
command -v python3 >/dev/null && python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
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

# The Airflow OpenFaaS provider (a real OpenFaaS client) in its own venv, git-ignored under
# target/, rebuilt when its pins change. Every package is pinned by
# tests/clients/airflow-constraints.txt. No Airflow database is made: the test gives the hook
# its connection in an AIRFLOW_CONN_* variable. A fresh install took 32 s here (pip's cache
# off; 295 MB of venv, 131 packages); when up to date this step takes under 2 s.
venv=target/pyenv/airflow
pins=(apache-airflow==3.3.2 apache-airflow-providers-openfaas==3.9.6)
want="${pins[*]} $(sha256sum tests/clients/airflow-constraints.txt | cut -d' ' -f1)"
if [ "$(cat "$venv/faasgate-pins" 2>/dev/null)" != "$want" ] \
    || ! "$venv/bin/python" -c 'import airflow.providers.openfaas.hooks.openfaas' 2>/dev/null; then
    echo "test-setup: installing ${pins[*]} into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        -c tests/clients/airflow-constraints.txt "${pins[@]}"
    echo "$want" > "$venv/faasgate-pins"
fi
