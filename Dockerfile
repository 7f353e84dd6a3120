# One image for every Shop service; the Deployment picks the service:
#   command: ["python", "-m", "shared.run", "<service>"]
# Build: `make image` (deploy/tools/image.sh): wheels of the runtime
# dependencies are built on the host into wheels/, so nothing is downloaded
# inside the build; BASE_IMAGE may be replaced by any Debian bookworm image
# with python3 and python3-venv (image.sh makes one with debootstrap where the
# public one cannot be pulled).
# checkov:skip=CKV_DOCKER_7:checkov cannot resolve ARG; the default below is pinned to a version tag, which tests/deploy asserts
ARG BASE_IMAGE=python:3.11.7-slim-bookworm

# --- build stage: pip and the wheelhouse live here only ----------------------
FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY wheels/ /wheels/
# Runtime dependencies only (wheels/runtime.txt: pyproject's
# [project].dependencies at the versions of requirements.lock): no pytest,
# ruff or test-only mongod wheel.
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-index --find-links /wheels -r /wheels/runtime.txt
COPY shared/ /app/shared/
COPY services/ /app/services/
# tools/: admin runs as every Deployment's init container (declare).
COPY tools/ /app/tools/
# The root filesystem is read-only at run time: compile bytecode now.
RUN /opt/venv/bin/python -m compileall -q /app /opt/venv/lib

# --- runtime stage: no pip cache, no wheels, non-root ---------------------------
FROM ${BASE_IMAGE}
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
