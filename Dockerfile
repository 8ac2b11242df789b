# One CPU image for the podpulse services that need no GPU (the stack in docker-compose.yml:
# twin, prober, alerter, tagger); each service picks its command. It holds no torch: the
# model worker, and only it, needs torch, and its GPU image is services/worker/Dockerfile.
# Build from the repository root: `docker build -t podpulse .`; docker-compose.yml builds one
# image per service from it (`--build-arg PODPULSE_SERVICE=<service>`), each
# labelled with its service and running its own command.

# Only what decides the dependencies (the lock, every pyproject, the lock reader), so that
# the install layer below is rebuilt when they change and reused when only code changes.
FROM python:3.11-slim AS lock
WORKDIR /src
COPY . .
RUN find . -type f ! -name pyproject.toml ! -name uv.lock ! -path ./scripts/lockfile.py -delete \
 && find . -depth -type d -empty -delete

FROM python:3.11-slim
ARG PODPULSE_SERVICE=all
LABEL org.opencontainers.image.title="podpulse-${PODPULSE_SERVICE}"
RUN apt-get update && apt-get install -y --no-install-recommends make redis-tools \
    && rm -rf /var/lib/apt/lists/*
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY --from=lock /src ./
# Every member but the model worker, with what uv.lock pins for them, from hashes. uv (the
# version the root pyproject requires) only exports the lock and is not kept; pruning the
# worker keeps torch and transformers out, and `pip check` below fails the build if a
# service still needs them.
RUN pip install --target /tmp/uv "uv==$(python scripts/lockfile.py uv-version)" \
 && /tmp/uv/bin/uv export --frozen --quiet --format requirements.txt --no-dev --group build \
      --no-emit-workspace --prune podpulse-worker \
      $(python scripts/lockfile.py members --without podpulse-worker | sed 's/^/--package /') \
      -o /tmp/requirements.txt \
 && pip install --require-hashes --no-deps -r /tmp/requirements.txt \
 && rm -rf /tmp/uv /tmp/requirements.txt
# Sources last: a code change rebuilds only this layer.
COPY libs ./libs
COPY services ./services
RUN pip install --no-deps --no-build-isolation \
      $(python scripts/lockfile.py members --without podpulse-worker --paths) \
 && pip check
CMD ["podpulse", "--help"]
