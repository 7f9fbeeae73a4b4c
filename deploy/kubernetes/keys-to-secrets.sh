#!/bin/sh
# The services' keys as Kubernetes Secrets, one per service: pagi-keys-NAME
# holds NAME.key (its own private key, nothing else's) and every public key.
# The operator's private key stays where it is: it signs `pagi token`s, and
# no pod holds it.
#
#   pagi keys init --dir ./pagi-keys        # once; keep this directory safe
#   deploy/kubernetes/keys-to-secrets.sh ./pagi-keys | kubectl apply -n pagi -f -
#
# Prints the manifests (nothing is sent anywhere); needs `kubectl` (or
# KUBECTL) on PATH. Rotating: `pagi keys init --dir ./pagi-keys --force`,
# apply again, then restart the deployments (kubectl rollout restart).
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 KEYS_DIR   (a directory made by: pagi keys init --dir KEYS_DIR)" >&2
    exit 2
fi
keys="$1"
kubectl="${KUBECTL:-kubectl}"
services="gateway memory sandbox agent bff"

for name in $services operator; do
    if [ ! -f "$keys/$name.pub" ]; then
        echo "$0: $keys/$name.pub missing (run: pagi keys init --dir $keys)" >&2
        exit 1
    fi
done

separator=""
for name in $services; do
    if [ ! -f "$keys/$name.key" ]; then
        echo "$0: $keys/$name.key missing (run: pagi keys init --dir $keys)" >&2
        exit 1
    fi
    set -- --from-file="$name.key=$keys/$name.key"
    for public in "$keys"/*.pub; do
        set -- "$@" --from-file="$(basename "$public")=$public"
    done
    printf '%s' "$separator"
    "$kubectl" create secret generic "pagi-keys-$name" "$@" \
        --dry-run=client -o yaml
    separator="---
"
done
