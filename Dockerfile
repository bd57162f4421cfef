# memproxy — an OpenAI-compatible stateful proxy.
#   docker build -t memproxy .
#   docker run --rm -v memproxy-data:/data memproxy memproxy keys add me   # prints a key, once
#   docker run -p 8080:8080 -e OPENAI_API_KEY=sk-... -v memproxy-data:/data memproxy
# The container listens on 0.0.0.0, so `serve` refuses to start while no API key exists (every
# caller would be an admin). To run it open on purpose, on a network you trust, add
# -e MEMPROXY_SERVER_ALLOW_OPEN=true. See docs/security.md.
# CI has no Docker engine; .ci/docker-steps runs these install steps in a fresh virtualenv.
# With Open WebUI (and optionally Postgres): compose.yaml, checked by tests/e2e/test_compose.py.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MEMPROXY_SERVER_HOST=0.0.0.0 \
    MEMPROXY_SERVER_PORT=8080 \
    MEMPROXY_DATABASE_URL=sqlite:////data/memproxy.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY proxy ./proxy
RUN pip install --no-cache-dir '.[fast,postgres]' \
    && useradd --create-home --uid 10001 memproxy \
    && mkdir -p /data && chown memproxy /data

USER memproxy
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health/liveliness', timeout=2)"

CMD ["memproxy", "serve"]
