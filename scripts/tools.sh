#!/usr/bin/env bash
# Installs what the build, the tests and the demo need on a fresh Debian machine, and
# nothing that is already there. Sourced by scripts/test.sh and scripts/demo.sh.
set -euo pipefail

CBINDGEN_VERSION=0.29.4

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(gcc libc6-dev)
command -v make >/dev/null 2>&1 || need_apt+=(make)
if [ "${1:-}" = "test" ]; then
  command -v valgrind >/dev/null 2>&1 || need_apt+=(valgrind)
  # The packaging checks: the header as C++, the installed copy through pkg-config.
  command -v g++ >/dev/null 2>&1 || need_apt+=(g++)
  command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
  # The C# binding: Debian's Mono (compiler and runtime, about a minute to install).
  command -v mcs >/dev/null 2>&1 || need_apt+=(mono-mcs)
  command -v mono >/dev/null 2>&1 || need_apt+=(mono-runtime)
  command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== installing ${need_apt[*]} (apt)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ "${1:-}" = "test" ]; then
  if ! cbindgen --version 2>/dev/null | grep -q " $CBINDGEN_VERSION\$"; then
    echo "== installing cbindgen $CBINDGEN_VERSION (cargo install, about 2 minutes)"
    cargo install --quiet --locked --version "$CBINDGEN_VERSION" cbindgen
  fi
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
  if ! python3 -m pytest --version >/dev/null 2>&1; then
    echo "== installing pytest (pip)"
    # Debian's own python3 refuses pip installs (PEP 668) unless told, and may lack pip.
    python3 -m pip install --quiet pytest 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages pytest 2>/dev/null || {
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq python3-pytest >/dev/null
    }
  fi
fi
