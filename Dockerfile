# One image for every PAGI service; compose picks the service by command
# (`pagi serve NAME`). Build: docker build -t pagi:local .
# BASE_IMAGE lets a local Debian-based Python 3.11 image stand in where no
# registry is reachable (scripts/podman-setup.sh builds one).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/pagi
WORKDIR /src
# Dependencies first, from the lock alone, so code edits reuse this layer:
# the exact versions `make test` runs with, every file hash-checked, wheels
# only (the build backend is in the lock too, so building PAGI fetches nothing).
COPY requirements/runtime.txt /tmp/runtime.txt
RUN /opt/pagi/bin/pip install -q --require-hashes --only-binary :all: -r /tmp/runtime.txt
COPY pyproject.toml README.md ./
COPY pagi ./pagi
COPY cli ./cli
COPY proto ./proto
COPY sandbox ./sandbox
COPY gateway ./gateway
COPY agent ./agent
COPY bff ./bff
COPY memory ./memory
# A regular (non-editable) install compiles the .pyc files now: the runtime
# root filesystem is read-only. pip and setuptools are not needed at run time.
RUN /opt/pagi/bin/pip install -q --no-deps --no-build-isolation . \
 && /opt/pagi/bin/pip uninstall -y -q pip setuptools

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="PAGI" \
      org.opencontainers.image.description="Self-hosted backend for tool-running AI agents, with a hardened tool sandbox"
# One unprivileged user for every service; directories that compose mounts
# volumes on are created here so fresh volumes inherit this ownership.
RUN useradd --uid 10001 --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin pagi \
 && mkdir -p /var/lib/pagi/memory /var/lib/pagi/audit /etc/pagi/keys /etc/pagi/policies \
        /keys/all /keys/gateway /keys/memory /keys/sandbox /keys/agent /keys/bff /keys/operator \
 && chown -R pagi:pagi /var/lib/pagi /keys \
 && chmod 0700 /keys/all /keys/gateway /keys/memory /keys/sandbox /keys/agent /keys/bff /keys/operator
COPY --from=builder /opt/pagi /opt/pagi
COPY deploy/keys/distribute-keys.sh /usr/local/bin/pagi-distribute-keys
COPY deploy/keys/wait-for-keys.sh /usr/local/bin/pagi-wait-for-keys
ENV PATH=/opt/pagi/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PAGI_BIND_HOST=0.0.0.0 \
    PAGI_STATE_DIR=/var/lib/pagi \
    PAGI_KEYS_DIR=/etc/pagi/keys
# The working dir holds no .env file: settings come from the environment.
WORKDIR /var/lib/pagi
USER 10001:10001
CMD ["pagi", "--help"]
