#!/usr/bin/env bash
# Installs what `cargo test` needs beyond a Rust toolchain, when missing (Debian, as root):
# python3 (example functions, some tests), and Chromium with its WebDriver for the UI test
# (tests/ui_browser.rs drives /usr/bin/chromium through /usr/bin/chromedriver).
set -euo pipefail

missing=()
command -v python3 >/dev/null || missing+=(python3)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)

if [ ${#missing[@]} -gt 0 ]; then
    echo "test-setup: installing ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
fi
