#!/usr/bin/env bash
# Opt-in end-to-end run against a real cluster (see docs/provisioning.md):
#   scripts/molecule-cluster.sh <inventory> <kubeconfig>
# provisions the inventory's hosts with playbooks/site.yml, runs it again expecting no change,
# and verifies the cluster from this machine (needs kubectl on PATH and the kubeconfig).
set -euo pipefail
cd "$(dirname "$0")/.."
inventory=${1:-${FIRM_E2E_INVENTORY:-}}
kubeconfig=${2:-${KUBECONFIG:-}}
if [ -z "$inventory" ] || [ ! -e "$inventory" ]; then
    echo "usage: $0 <inventory> <kubeconfig>   (or set FIRM_E2E_INVENTORY and KUBECONFIG)" >&2
    exit 2
fi
if [ -z "$kubeconfig" ] || [ ! -r "$kubeconfig" ]; then
    echo "no readable kubeconfig: give it as the second argument or in KUBECONFIG" >&2
    exit 2
fi
command -v kubectl > /dev/null || { echo "kubectl is not on PATH; install the release the cluster runs" >&2; exit 2; }
FIRM_E2E_INVENTORY=$(realpath "$inventory")
KUBECONFIG=$(realpath "$kubeconfig")
export FIRM_E2E_INVENTORY KUBECONFIG PATH="$PWD/.venv/bin:$PATH"
exec molecule test -s cluster
