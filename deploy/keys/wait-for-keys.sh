#!/bin/sh
# Entry point of every PAGI service container: wait until the `keys` service
# has handed this service its keys (the `.complete` marker it writes last),
# then run the service. Compose files do not order the services after the
# one-shot `keys` service, because podman does not restart a container whose
# declared dependency has exited; waiting here works on every engine.
set -eu

KEYS_DIR="${PAGI_KEYS_DIR:-/etc/pagi/keys}"
WAIT_SECONDS="${PAGI_KEYS_WAIT_SECONDS:-120}"

waited=0
while [ ! -e "$KEYS_DIR/.complete" ]; do
    if [ "$waited" -ge "$((WAIT_SECONDS * 4))" ]; then
        echo "pagi-wait-for-keys: no keys in $KEYS_DIR after ${WAIT_SECONDS}s;" \
            "is the keys service running? (docker compose up keys)" >&2
        exit 1
    fi
    sleep 0.25
    waited=$((waited + 1))
done
exec "$@"
