# mingpian — one image for `serve` and `worker`. CPU-only torch (no CUDA download).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    MINGPIAN_DATA_DIR=/data

# A CJK font so posters render Chinese; curl for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-wqy-microhei curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY app ./app
COPY bot ./bot
COPY nlp ./nlp
COPY cards ./cards
COPY catalog_sync ./catalog_sync
COPY catalog ./catalog
COPY store ./store
COPY models ./models

RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install ".[st]"

RUN useradd --create-home --uid 10001 mingpian \
 && mkdir -p /data && chown mingpian:mingpian /data
USER mingpian
VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1

# Scale-out: set MINGPIAN_REDIS_URL and run `mingpian worker` in other containers.
CMD ["mingpian", "serve", "--host", "0.0.0.0", "--port", "8000"]
