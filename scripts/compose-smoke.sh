#!/usr/bin/env bash
# Smoke test of the container stack: brings compose.yaml up AS WRITTEN with
# rootful podman + podman-compose, waits for health, runs the contract checks
# against the published ports (tests/compose/stack_checks.py), checks the
# hardening inside the containers, restarts the stack (warm start, volumes
# kept) and checks that state survived, then tears everything down.
#
# Exit status: 0 when every check passed; non-zero on any failure. When
# podman cannot be installed at all (no apt, not root) it prints a loud SKIP
# banner and exits 0 under CI=true, 1 otherwise.
#
# Environment:
#   PAGI_SMOKE_PROJECT   compose project name (default pagi-smoke)
#   PAGI_SMOKE_KEEP=1    leave the stack running at the end (for debugging)
#   PAGI_BASE_IMAGE, CONTAINERS_CONF: see scripts/podman-setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

PROJECT="${PAGI_SMOKE_PROJECT:-pagi-smoke}"
PYTHON="$ROOT/.venv/bin/python"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/deploy/podman/containers.conf}"
export PAGI_BASE_IMAGE="${PAGI_BASE_IMAGE:-localhost/pagi-base:bookworm}"
export PAGI_IMAGE="${PAGI_IMAGE:-localhost/pagi:local}"
SERVICES=(gateway memory sandbox agent bff)
HEALTH_TIMEOUT_SECONDS=180

now() { date +%s.%N; }
# Run a command, showing its output only when it fails (podman without
# systemd prints harmless healthcheck-timer errors on every create/remove).
quietly() {
    local log="$WORK/last-command.log"
    if ! "$@" >"$log" 2>&1; then
        cat "$log" >&2
        return 1
    fi
}
seconds_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
say() { printf '\n== %s\n' "$*"; }

loud_skip() {
    local line='!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
    printf '%s\n%s\n%s\n%s\n' "$line" \
        "!!! SKIPPED: compose smoke test — $1" \
        "!!! The container stack was NOT brought up or checked on this machine." "$line"
}

STARTED="$(now)"
say "podman set-up"
setup_status=0
bash "$ROOT/scripts/podman-setup.sh" || setup_status=$?
if [ "$setup_status" -eq 3 ]; then
    loud_skip "podman cannot be installed here (needs root and apt-get)"
    if [ "${CI:-}" = "true" ]; then
        exit 0
    fi
    exit 1
elif [ "$setup_status" -ne 0 ]; then
    echo "compose-smoke: podman set-up failed ($setup_status)" >&2
    exit 1
fi
SETUP_SECONDS="$(seconds_since "$STARTED")"
COMPOSE=("$ROOT/.venv/bin/podman-compose" -p "$PROJECT" -f "$ROOT/compose.yaml")

# Free host ports for the published contract ports, so the smoke test never
# collides with a stack (or test) already listening on 8000-8003/50051.
eval "$("$PYTHON" - <<'EOF'
import socket
names = ["PY_AGENT_PORT", "RUST_SANDBOX_PORT", "GO_BFF_PORT", "MEMORY_MOCK_PORT",
         "MODEL_GATEWAY_GRPC_PORT"]
sockets = []
for name in names:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
    print(f"export {name}={s.getsockname()[1]}")
EOF
)"
export PAGI_PUBLISH_HOST=127.0.0.1

# The policy edit happens on a copy: the repository's policy stays untouched.
WORK="$(mktemp -d /tmp/pagi-compose-smoke.XXXXXX)"
cp -r "$ROOT/policies" "$WORK/policies"
chmod 0755 "$WORK" "$WORK/policies"
find "$WORK/policies" -type d -exec chmod 0755 {} + -o -type f -exec chmod 0644 {} +
export PAGI_POLICY_DIR="$WORK/policies"
export PAGI_SMOKE_MARKER_FILE="$WORK/memory-marker"

FAILED=1
cleanup() {
    local status=$?
    if [ "$FAILED" -ne 0 ]; then
        say "logs of the failed stack (last 40 lines each)"
        for service in keys "${SERVICES[@]}"; do
            echo "--- $service"
            podman logs --tail 40 "${PROJECT}_${service}_1" 2>&1 || true
        done
    fi
    if [ "${PAGI_SMOKE_KEEP:-0}" = "1" ]; then
        echo "compose-smoke: PAGI_SMOKE_KEEP=1, leaving project $PROJECT running"
    else
        say "tear-down"
        "${COMPOSE[@]}" down -v >/dev/null 2>&1 || true
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT

wait_healthy() {
    local deadline=$((SECONDS + HEALTH_TIMEOUT_SECONDS))
    local pending=("${SERVICES[@]}")
    while [ "${#pending[@]}" -gt 0 ]; do
        local still=()
        local service
        for service in "${pending[@]}"; do
            local container="${PROJECT}_${service}_1" state
            # No systemd here: healthchecks run only when asked.
            if podman healthcheck run "$container" >/dev/null 2>&1; then
                continue
            fi
            still+=("$service")
            state="$(podman inspect --format '{{.State.Status}} {{.RestartCount}}' \
                "$container" 2>/dev/null || echo "missing 0")"
            if [ "${state% *}" = "missing" ] || [ "${state#* }" -gt 20 ]; then
                echo "compose-smoke: $service is not coming up ($state)" >&2
                return 1
            fi
        done
        pending=("${still[@]+"${still[@]}"}")
        if [ "${#pending[@]}" -eq 0 ]; then
            return 0
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "compose-smoke: not healthy after ${HEALTH_TIMEOUT_SECONDS}s: ${pending[*]}" >&2
            return 1
        fi
        sleep 1
    done
}

# Leftovers of an interrupted run would make `up` reuse old containers.
"${COMPOSE[@]}" down -v >/dev/null 2>&1 || true

say "build (one image for every service)"
BUILD_STARTED="$(now)"
quietly "${COMPOSE[@]}" build keys
BUILD_SECONDS="$(seconds_since "$BUILD_STARTED")"
"$PYTHON" -m tests.compose.stack_checks image --image "$PAGI_IMAGE"

say "up (cold: fresh volumes and keys)"
UP_STARTED="$(now)"
quietly "${COMPOSE[@]}" up -d
wait_healthy
COLD_UP_SECONDS="$(seconds_since "$UP_STARTED")"
podman ps --filter "label=io.podman.compose.project=$PROJECT" \
    --format '{{.Names}}\t{{.Status}}\t{{.Ports}}'

say "operator tokens (docker compose run --rm cli pagi token --aud ...)"
TOKENS="$("${COMPOSE[@]}" --profile tools run --rm -T cli sh -c \
    'for aud in agent sandbox memory gateway bff; do echo "token $aud $(pagi token --aud $aud --ttl 900)"; done' \
    2>"$WORK/tokens.log")" || { cat "$WORK/tokens.log" >&2; exit 1; }
TOKEN_COUNT=0
while read -r marker audience value; do
    value="${value%$'\r'}"  # in case a terminal was attached after all (CR LF)
    if [ "$marker" = "token" ] && [ -n "$value" ]; then
        export "PAGI_SMOKE_TOKEN_${audience^^}=$value"
        echo "got a token for $audience"
        TOKEN_COUNT=$((TOKEN_COUNT + 1))
    fi
done <<<"$TOKENS"
if [ "$TOKEN_COUNT" -ne 5 ]; then
    echo "compose-smoke: expected 5 operator tokens, got $TOKEN_COUNT" >&2
    cat "$WORK/tokens.log" >&2
    exit 1
fi

say "contract checks against the published ports"
CHECKS_STARTED="$(now)"
"$PYTHON" -m tests.compose.stack_checks contract --policy-dir "$PAGI_POLICY_DIR"
say "hardening inside the containers"
"$PYTHON" -m tests.compose.stack_checks hardening --project "$PROJECT" \
    --policy-dir "$PAGI_POLICY_DIR"
CHECKS_SECONDS="$(seconds_since "$CHECKS_STARTED")"

say "restart (warm: image, volumes and keys kept)"
quietly "${COMPOSE[@]}" down
WARM_STARTED="$(now)"
quietly "${COMPOSE[@]}" up -d
wait_healthy
WARM_UP_SECONDS="$(seconds_since "$WARM_STARTED")"
"$PYTHON" -m tests.compose.stack_checks restarted --project "$PROJECT"

IMAGE_BYTES="$(podman image inspect "$PAGI_IMAGE" --format '{{.Size}}')"
FAILED=0
say "summary"
printf '%-44s %8s s\n' \
    "podman set-up (packages, base image)" "$SETUP_SECONDS" \
    "image build" "$BUILD_SECONDS" \
    "cold up until all 5 healthy" "$COLD_UP_SECONDS" \
    "contract + hardening checks" "$CHECKS_SECONDS" \
    "warm up (restart) until all 5 healthy" "$WARM_UP_SECONDS" \
    "whole smoke run (before tear-down)" "$(seconds_since "$STARTED")"
printf '%-44s %8s MB\n' "image $PAGI_IMAGE" "$((IMAGE_BYTES / 1000000))"
echo "compose smoke test passed"
