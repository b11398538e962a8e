# syntax=docker/dockerfile:1
# kai-inventory container image.
#   docker build -t kai-inventory:0.1.0 .
#   docker run --rm -p 8080:8080 -e REDIS_URL=... -e DATABASE_URL=... -e KAI_JWT_SECRET=... kai-inventory:0.1.0
# Stage 1 builds the wheel (lua/ and migrations/ ship inside it as kai_inventory/lua and
# kai_inventory/migrations) and the wheels of its pinned runtime dependencies; stage 2 installs
# only those, offline, into a slim image that runs as a non-root user.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY constraints.txt ./
RUN pip install -c constraints.txt build hatchling
COPY pyproject.toml README.md ./
COPY kai_inventory ./kai_inventory
COPY lua ./lua
COPY migrations ./migrations
RUN python -m build --wheel --no-isolation --outdir /dist \
    && pip wheel -c constraints.txt --wheel-dir /dist/deps /dist/kai_inventory-*.whl

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="kai-inventory" \
      org.opencontainers.image.description="Segment-aware seat inventory for KAI trains" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# postgresql-client: pg_dump / pg_restore for `kai-inventory backup` and `restore`.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 kai \
    && useradd --system --uid 10001 --gid kai --home-dir /nonexistent --no-create-home \
       --shell /usr/sbin/nologin kai
COPY constraints.txt /tmp/constraints.txt
RUN --mount=type=bind,from=builder,source=/dist,target=/dist \
    pip install --no-index --find-links /dist/deps -c /tmp/constraints.txt /dist/kai_inventory-*.whl \
    && rm /tmp/constraints.txt
USER 10001:10001
WORKDIR /tmp
EXPOSE 8080
# No curl in the slim image: the check is a Python one-liner; any non-2xx or error fails it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2)"]
ENTRYPOINT ["kai-inventory"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
