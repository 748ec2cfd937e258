#!/usr/bin/env bash
# Installs what building and testing okome needs on Debian: redis-server
# (and redis-tools: redis-cli, redis-benchmark) and libclang-dev (bindgen).
# Idempotent: does nothing when everything is already present.
set -euo pipefail

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
# bindgen loads libclang.so (not libclang-cpp); Debian's libclang-dev brings it.
if ! ls /usr/lib/llvm-*/lib/libclang.so /usr/lib/*/libclang.so >/dev/null 2>&1; then
  need+=(libclang-dev)
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
# Debian starts a redis-server service on install; okome's tests start their
# own servers on free ports, so the packaged service is left alone.
