#!/usr/bin/env bash
# System packages the Rust build links against: OpenSSL's headers (librdkafka
# is built with SSL, which also brings SASL/SCRAM) and pkg-config to find
# them. Installs them with apt-get when missing and allowed (root on Debian /
# Ubuntu); otherwise says what to install. Idempotent.
set -euo pipefail

if command -v pkg-config >/dev/null && pkg-config --exists openssl; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup-system: installing libssl-dev and pkg-config (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends libssl-dev pkg-config >/dev/null
  exit 0
fi
echo "setup-system: the build needs OpenSSL headers and pkg-config (Debian/Ubuntu: apt-get install libssl-dev pkg-config)" >&2
exit 1
