#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, skipping what is there:
# cargo-nextest, and Debian packages for the tests that drive real tools (git for the
# workspace-changes tests, tmux for the terminal dashboard,
# chromium for the web dashboard, systemd for systemd-analyze), the npm packages of tests/web (playwright-core) and
# tests/agents (the real Claude Code, Codex and Gemini CLIs, run against mock model
# APIs), and
# schemathesis and openapi-spec-validator (PyPI) in tests/contract/.venv.
set -euo pipefail

if ! command -v cargo-nextest >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

packages=()
command -v git >/dev/null 2>&1 || packages+=(git)
command -v tmux >/dev/null 2>&1 || packages+=(tmux)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
# systemd-analyze checks the unit `warden service install` writes.
command -v systemd-analyze >/dev/null 2>&1 || packages+=(systemd)

if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "installing: ${packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

# playwright-core for the web dashboard test (it drives the system chromium).
if [ ! -d tests/web/node_modules/playwright-core ] || [ tests/web/package-lock.json -nt tests/web/node_modules ]; then
  (cd tests/web && npm ci --no-audit --no-fund)
fi

# The real agents for tests/api/real_agents.rs (native binaries, about 800 MB).
if [ ! -x tests/agents/node_modules/.bin/claude ] || [ ! -x tests/agents/node_modules/.bin/codex ] \
  || [ ! -x tests/agents/node_modules/.bin/gemini ] \
  || [ tests/agents/package-lock.json -nt tests/agents/node_modules ]; then
  (cd tests/agents && npm ci --no-audit --no-fund)
fi

# schemathesis and openapi-spec-validator for the contract test (tests/api/contract.rs), in a venv of its own.
venv=tests/contract/.venv
if [ ! -x "$venv/bin/schemathesis" ] || [ ! -x "$venv/bin/openapi-spec-validator" ] || [ tests/contract/requirements.txt -nt "$venv/bin/schemathesis" ]; then
  if ! python3 -m venv "$venv"; then
    # Debian's own python3 needs its venv module installed.
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/contract/requirements.txt
  touch "$venv/bin/schemathesis"
fi
