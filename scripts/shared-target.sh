#!/usr/bin/env bash
# Points a fresh clone's target/ at a Cargo target directory shared by every
# clone on this machine ($XDG_CACHE_HOME/fraudflight/cargo-target, default
# ~/.cache/...), the way ~/.cargo already shares downloaded crates. A new
# clone then compiles only fraudflight itself, not its ~600 dependencies:
# `make test` on a clean clone of a machine that ran it before saves the
# ~15 minutes of a cold build. Called by the Makefile before anything builds.
#
# Leaves an existing target/ (directory or link) alone; FRAUDFLIGHT_SHARED_TARGET=0
# opts out. Each clone path adds its own build of the fraudflight crate (a
# few GB of test binaries), so the cache is emptied once it passes
# FRAUDFLIGHT_SHARED_TARGET_MAX_GB (default 20) and rebuilt from scratch.
# Two clones building at once share Cargo's lock: they wait, not collide.
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${FRAUDFLIGHT_SHARED_TARGET:-1}" = 0 ] && exit 0
if [ -L target ] && [ ! -e target ]; then
  # This clone's link outlived the cache (emptied by another clone): recreate it.
  mkdir -p "$(readlink target)"
  exit 0
fi
[ -e target ] && exit 0

cache=${XDG_CACHE_HOME:-$HOME/.cache}/fraudflight/cargo-target
max_gb=${FRAUDFLIGHT_SHARED_TARGET_MAX_GB:-20}
if [ -d "$cache" ]; then
  used_kb=$(du -sk "$cache" 2>/dev/null | cut -f1)
  if [ "${used_kb:-0}" -gt $((max_gb * 1024 * 1024)) ]; then
    echo "shared-target: $cache is over ${max_gb} GB; emptying it" >&2
    rm -rf "$cache"
  fi
fi
mkdir -p "$cache"
ln -s "$cache" target
echo "shared-target: target -> $cache" >&2
