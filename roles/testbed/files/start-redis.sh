#!/usr/bin/env bash
# Start a Redis server on loopback for firm (port $FIRM_REDIS_PORT, default 6379) unless one answers.
# Nothing is persisted: firm's tests and the embedded default treat it as a cache of record for a run.
set -euo pipefail
port=${FIRM_REDIS_PORT:-6379}
if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
    echo "Redis: answering on 127.0.0.1:$port"
    exit 0
fi
redis-server --bind 127.0.0.1 --port "$port" --daemonize yes --save "" --appendonly no \
    --logfile "${TMPDIR:-/tmp}/firm-redis-$port.log" --pidfile "${TMPDIR:-/tmp}/firm-redis-$port.pid"
for _ in $(seq 50); do
    redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && { echo "Redis: started on 127.0.0.1:$port"; exit 0; }
    sleep 0.1
done
echo "Redis did not start on port $port; see ${TMPDIR:-/tmp}/firm-redis-$port.log" >&2
exit 1
