# syntax=docker/dockerfile:1
# One image for every WorkerRMQ process: `api`, `worker` and `run` (the default).
#   docker build -t workerrmq .
#   docker run --rm -p 5000:5000 -e RABBITMQ_URL=... -e DATABASE_URL=... workerrmq api

# Stage 1: build wheels for WorkerRMQ and every dependency.
FROM python:3.12-slim AS builder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY workerrmq ./workerrmq
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

# Stage 2: the runtime: the wheels installed, no compiler, no build tools, not root.
FROM python:3.12-slim
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/workerrmq-*.whl \
    && useradd --no-log-init --system --uid 10001 --user-group --home-dir /app workerrmq \
    && mkdir -p /app/var \
    && chown -R workerrmq:workerrmq /app
COPY deploy/docker/healthcheck.py /usr/local/lib/workerrmq/healthcheck.py
WORKDIR /app

# Listen on every interface inside the container (the defaults are for a host).
# Without DATABASE_URL, the database is SQLite in /app/var: one container only.
ENV BIND=0.0.0.0:5000 \
    WORKER_BIND=0.0.0.0:5001

USER 10001
# 5000: the API and dashboard; 5001: a worker's /healthz, /readyz and /metrics.
EXPOSE 5000 5001
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "/usr/local/lib/workerrmq/healthcheck.py"]
ENTRYPOINT ["workerrmq"]
CMD ["run"]
