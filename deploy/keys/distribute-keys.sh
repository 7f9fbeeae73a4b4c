#!/bin/sh
# One-shot key set-up for the compose stack (the `keys` service).
# Creates every identity's ES256 key pair once in /keys/all (kept in its own
# volume, so restarts keep the same keys), then gives each identity a
# directory /keys/<identity>/ holding its own private key and every public
# key. Each service mounts only its own directory, read-only.
# Safe to re-run while services are up (podman restarts it with its
# dependants): files are replaced by rename, never removed first.
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

# place SOURCE TARGET MODE: copy next to TARGET, then rename over it.
place() {
    cp "$1" "$2.new"
    chmod "$3" "$2.new"
    mv -f "$2.new" "$2"
}

for identity in $IDENTITIES; do
    target="$KEYS_ROOT/$identity"
    mkdir -p "$target"
    place "$KEYS_ROOT/all/$identity.key" "$target/$identity.key" 0600
    expected=".complete $identity.key"
    for public in "$KEYS_ROOT"/all/*.pub; do
        name="$(basename "$public")"
        place "$public" "$target/$name" 0644
        expected="$expected $name"
    done
    # Anything else (another identity's private key, leftovers) goes.
    for present in "$target"/* "$target"/.[!.]*; do
        [ -e "$present" ] || continue
        case " $expected " in
            *" $(basename "$present") "*) ;;
            *) rm -rf "$present" ;;
        esac
    done
    # Last: services start once they see it (pagi-wait-for-keys).
    : >"$target/.complete.new"
    mv -f "$target/.complete.new" "$target/.complete"
done
echo "keys ready for: $IDENTITIES"
