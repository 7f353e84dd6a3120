# One image for every Shop service; the Deployment picks the service:
#   command: ["python", "-m", "shared.run", "<service>"]
# Build: docker build -t registry.example.com/shop/shop:$(git rev-parse --short HEAD) .

# --- build stage: compilers and pip live here only -------------------------
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# Runtime dependencies only (pyproject's [project].dependencies), at the
# versions of requirements.lock: no pytest, ruff or test-only mongod wheel.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > runtime.txt \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install -r runtime.txt -c requirements.lock
COPY shared/ /app/shared/
COPY services/ /app/services/
# The root filesystem is read-only at run time: compile bytecode now.
RUN /opt/venv/bin/python -m compileall -q /app /opt/venv/lib

# --- runtime stage: no compiler, no pip cache, non-root ---------------------
FROM python:3.11.7-slim-bookworm
LABEL org.opencontainers.image.title="shop" \
      org.opencontainers.image.description="The Shop suite: one image, service chosen by command"
RUN groupadd --system --gid 10001 shop \
    && useradd --system --uid 10001 --gid shop --no-create-home --shell /usr/sbin/nologin shop
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
ENV PATH="/opt/venv/bin:$PATH" \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HTTP_HOST=0.0.0.0 \
    HTTP_PORT=8080
WORKDIR /app
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=30s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HTTP_PORT', '8080') + '/health/live', timeout=2)"]
CMD ["python", "-m", "shared.run", "--help"]
