#!/usr/bin/env bash
# Start firm's Redis on loopback (port $FIRM_REDIS_PORT, default 6379) unless it already answers.
# It requires a password, generated here on first use into $FIRM_REDIS_PASSWORD_FILE (default
# /etc/firm/redis.password, mode 0600; never in the repository). firm's clients read it from there.
# Nothing is persisted: firm's tests and the embedded default treat it as a cache of record for a run.
set -euo pipefail
port=${FIRM_REDIS_PORT:-6379}
password_file=${FIRM_REDIS_PASSWORD_FILE:-/etc/firm/redis.password}
log=${TMPDIR:-/tmp}/firm-redis-$port.log

if [[ ! -e $password_file ]]; then
    mkdir -p "$(dirname "$password_file")"
    (umask 077 && od -An -vtx1 -N24 /dev/urandom | tr -d ' \n' > "$password_file" && echo >> "$password_file")
    echo "Redis: generated a password into $password_file (mode 0600)"
fi
if [[ $(stat -c %a "$password_file") != 600 ]]; then
    echo "Redis: $password_file has mode $(stat -c %a "$password_file"); fix: chmod 600 $password_file" >&2
    exit 1
fi
password=$(tr -d '[:space:]' < "$password_file")
if [[ -z $password ]]; then
    echo "Redis: $password_file is empty; fix: remove it and run this again" >&2
    exit 1
fi

# redis-cli reads the password from the environment (never from its command line, which ps shows).
unauthenticated=$(env -u REDISCLI_AUTH redis-cli -p "$port" ping 2>&1 || true)
authenticated=$(REDISCLI_AUTH=$password redis-cli --no-auth-warning -p "$port" ping 2>&1 || true)
if [[ $unauthenticated == PONG ]]; then
    # A Redis from before passwords were required: protect it in place (its data stays).
    printf 'CONFIG SET protected-mode yes\nCONFIG SET requirepass "%s"\n' "$password" \
        | env -u REDISCLI_AUTH redis-cli -p "$port" > /dev/null
    echo "Redis: answering on 127.0.0.1:$port without a password; it requires the one in $password_file now"
    exit 0
fi
if [[ $authenticated == PONG ]]; then
    echo "Redis: answering on 127.0.0.1:$port"
    exit 0
fi
if [[ $unauthenticated == *NOAUTH* ]]; then
    echo "Redis: a server on port $port requires another password than the one in $password_file;" \
         "fix: stop it, or point FIRM_REDIS_PASSWORD_FILE at its password" >&2
    exit 1
fi

# The password goes in on standard input, as configuration, so that no command line shows it. The
# server outlives this script, so it keeps nothing else the caller had open (the lock of a caller's
# `flock`, for one, would be held as long as Redis runs).
printf 'requirepass "%s"\n' "$password" | (
    for fd in /proc/self/fd/*; do
        fd=${fd##*/}
        if (( fd > 2 )); then eval "exec $fd>&-" 2> /dev/null || true; fi
    done
    exec redis-server - --bind 127.0.0.1 --port "$port" --protected-mode yes --daemonize yes --save "" \
        --appendonly no --logfile "$log" --pidfile "${TMPDIR:-/tmp}/firm-redis-$port.pid" >> "$log"
)
for _ in $(seq 50); do
    if [[ $(REDISCLI_AUTH=$password redis-cli --no-auth-warning -p "$port" ping 2>&1) == PONG ]]; then
        echo "Redis: started on 127.0.0.1:$port (password in $password_file)"
        exit 0
    fi
    sleep 0.1
done
echo "Redis did not start on port $port; see $log" >&2
exit 1
