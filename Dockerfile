# One CPU image for every podpulse service (the stack in docker-compose.yml); each service
# picks its command. The GPU worker image is services/worker/Dockerfile.
FROM python:3.11-slim
RUN apt-get update && apt-get install -y --no-install-recommends make redis-tools \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml ./
COPY libs ./libs
COPY services ./services
# torch pinned first, as scripts/bootstrap does, so the resolver does not pick another build.
RUN pip install --no-cache-dir 'torch==2.13.0' \
    && pip install --no-cache-dir -e libs/common -e libs/twin -e services/worker -e services/prober \
       -e services/alerter -e services/tagger
ENV PYTHONUNBUFFERED=1
CMD ["podpulse", "--help"]
