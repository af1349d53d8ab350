#!/usr/bin/env bash
# System packages from the distribution, by what needs them:
#
#   scripts/setup-system.sh build      OpenSSL's headers and pkg-config (librdkafka is
#                                      built with SSL, which also brings SASL/SCRAM)
#   scripts/setup-system.sh services   the openssl tool (scripts/services.sh makes its
#                                      test certificates with it) and nginx (the HTTPS +
#                                      basic-auth front of the local OpenSearch)
#   scripts/setup-system.sh all        both (`make setup`, for the tests)
#
# `make demo` asks only for `build`. Installs what is missing with apt-get
# when allowed (root on Debian / Ubuntu); otherwise says what to install.
# Idempotent.
set -euo pipefail

what=${1:-all}
missing=()
if [ "$what" = build ] || [ "$what" = all ]; then
  if ! command -v pkg-config >/dev/null || ! pkg-config --exists openssl; then
    missing+=(libssl-dev pkg-config)
  fi
fi
if [ "$what" = services ] || [ "$what" = all ]; then
  command -v openssl >/dev/null || missing+=(openssl)
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
fi
case $what in build | services | all) ;; *) echo "setup-system: usage: $0 build|services|all" >&2; exit 2 ;; esac
[ ${#missing[@]} -gt 0 ] || exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "setup-system: installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The package starts a system nginx on port 80; the project runs its own.
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    service nginx stop >/dev/null 2>&1 || nginx -s quit >/dev/null 2>&1 || true
  fi
  exit 0
fi
echo "setup-system: missing ${missing[*]} (Debian/Ubuntu: apt-get install ${missing[*]})" >&2
exit 1
