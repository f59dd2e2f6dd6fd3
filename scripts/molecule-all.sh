#!/usr/bin/env bash
# Run the molecule scenarios of the roles (all of them, or those named): for each, molecule test
# creates its network-namespace test hosts, converges the role, converges it again (idempotence),
# verifies, and destroys the hosts. Needs root (network namespaces) and the venv (make venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
if [ "$(id -u)" -ne 0 ]; then
    echo "molecule's test hosts are network namespaces: run as root" >&2
    exit 1
fi
if [ $# -gt 0 ]; then
    scenarios=("$@")
else
    # Every scenario with test hosts of its own; "cluster" needs a real cluster (molecule-cluster.sh).
    mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' \
        | xargs -n1 basename | grep -vx cluster | sort)
fi
failed=()
for scenario in "${scenarios[@]}"; do
    echo "== molecule test -s $scenario"
    start=$SECONDS
    if molecule test -s "$scenario"; then
        echo "== $scenario: passed in $((SECONDS - start)) s"
    else
        echo "== $scenario: FAILED after $((SECONDS - start)) s"
        failed+=("$scenario")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed scenarios: ${failed[*]}" >&2
    exit 1
fi
echo "all ${#scenarios[@]} scenarios passed"
