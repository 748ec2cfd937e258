#!/usr/bin/env bash
# Installs what building and testing okome needs on Debian: redis-server
# (and redis-tools: redis-cli, redis-benchmark), libclang-dev (bindgen), and
# python3 with redis-py (python3-redis) for examples/python and its test, and
# python3-venv for the Python package's virtualenv, and Prometheus's
# redis_exporter (prometheus-redis-exporter) for the test of
# contrib/okome-prometheus-exporter.lua (python/tests/test_exporter.py).
# Idempotent: does nothing when everything is already present.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# bindgen loads libclang.so (not libclang-cpp); Debian's libclang-dev brings it.
if ! compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null \
   && ! compgen -G '/usr/lib/*/libclang.so*' >/dev/null; then
  need+=(libclang-dev)
fi
# tests/it/python_client.rs runs examples/python/okome_demo.py with Debian's
# /usr/bin/python3 if present, else `python3`; either one importing redis-py will do.
has_redis_py() { "$1" -c 'import redis' >/dev/null 2>&1; }
if ! { [ -x /usr/bin/python3 ] && has_redis_py /usr/bin/python3; } &&
  ! { command -v python3 >/dev/null 2>&1 && has_redis_py python3; }; then
  need+=(python3 python3-redis)
fi
# `make python-test` / `make lint` make a virtualenv (target/venv) with
# `python3 -m venv`, which on Debian's python3 needs python3-venv (ensurepip).
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  need+=(python3 python3-venv)
fi
# python/tests/test_exporter.py runs the real exporter with okome's collector
# script; Debian names the binary prometheus-redis-exporter, upstream
# redis_exporter (either will do; REDIS_EXPORTER overrides).
if ! command -v prometheus-redis-exporter >/dev/null 2>&1 &&
  ! command -v redis_exporter >/dev/null 2>&1; then
  need+=(prometheus-redis-exporter)
fi
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: missing ${need[*]} and no apt-get; install them by hand" >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts a redis-server service (and a prometheus-redis-exporter one,
# on :9121) on install; okome's tests start their own servers and exporters
# on free ports, so the packaged services are left alone.
