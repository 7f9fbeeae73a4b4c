#!/bin/sh
# One-shot key set-up for the compose stack (the `keys` service).
# Creates every identity's ES256 key pair once in /keys/all (kept in its own
# volume, so restarts keep the same keys), then gives each identity a
# directory /keys/<identity>/ holding its own private key and every public
# key. Each service mounts only its own directory, read-only.
# Rotate: `docker compose run --rm keys pagi-distribute-keys --force`.
set -eu

KEYS_ROOT="${PAGI_KEYS_ROOT:-/keys}"
IDENTITIES="gateway memory sandbox agent bff operator"

if [ "${1:-}" = "--force" ]; then
    pagi keys init --dir "$KEYS_ROOT/all" --force
else
    pagi keys init --dir "$KEYS_ROOT/all"
fi

umask 077
for identity in $IDENTITIES; do
    target="$KEYS_ROOT/$identity"
    mkdir -p "$target"
    # Stale files from an earlier layout or rotation must not linger.
    find "$target" -mindepth 1 -maxdepth 1 -exec rm -rf {} +
    cp "$KEYS_ROOT/all/$identity.key" "$target/$identity.key"
    chmod 0600 "$target/$identity.key"
    for public in "$KEYS_ROOT"/all/*.pub; do
        cp "$public" "$target/"
        chmod 0644 "$target/$(basename "$public")"
    done
done
echo "keys ready for: $IDENTITIES"
