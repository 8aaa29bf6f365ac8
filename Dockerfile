# syntax=docker/dockerfile:1
# celery-jobs-exporter: Prometheus exporter and Jobs API sidecar for Celery on Redis.
#
#   docker build -t celery-jobs-exporter .
#   docker run --rm -p 9813:9813 -e CELERY_EXPORTER_BROKER_URL=redis://redis:6379/0 celery-jobs-exporter
#
# Every flag of `serve` has an environment variable CELERY_EXPORTER_<FLAG>.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

# ---- build: install the package and its dependencies into a virtualenv
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md LICENSE constraints.txt ./
COPY exporter ./exporter
RUN pip install --no-cache-dir -c constraints.txt . \
    && find /opt/venv -name '__pycache__' -type d -prune -exec rm -rf {} + \
    && rm -rf /opt/venv/lib/python*/site-packages/pip /opt/venv/lib/python*/site-packages/pip-* /opt/venv/bin/pip*

# ---- runtime: the virtualenv only, as an unprivileged user
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="celery-jobs-exporter" \
      org.opencontainers.image.description="Prometheus exporter and Jobs API sidecar for Celery task queues on Redis" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 exporter \
    && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin exporter
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CELERY_EXPORTER_LISTEN_ADDRESS=0.0.0.0:9813
USER 10001:10001
EXPOSE 9813
# Liveness with the standard library (the image has no curl): GET /healthz on the
# port of CELERY_EXPORTER_LISTEN_ADDRESS.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CELERY_EXPORTER_LISTEN_ADDRESS', '0.0.0.0:9813').rsplit(':', 1)[1]; sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["celery-jobs-exporter"]
CMD ["serve"]
