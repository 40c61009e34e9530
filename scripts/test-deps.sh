#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, skipping what is there:
# cargo-nextest, and Debian packages for the tests that drive real tools (git for the
# workspace-changes tests, tmux for the terminal dashboard).
set -euo pipefail

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

packages=()
command -v git >/dev/null 2>&1 || packages+=(git)
command -v tmux >/dev/null 2>&1 || packages+=(tmux)

if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "installing: ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
