# ragdesk: one image for every role, chosen by its command (deploy/entrypoint.sh):
#   web | worker ingest|chat|maintenance | beat | migrate | manage ARGS...
# Build:  docker build -t ragdesk .      (README "Deployment"; scripts/stack-test builds it without a registry)
ARG BASE_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------- build: compilers, pip, the virtualenv
FROM ${BASE_IMAGE} AS build
# torch is pinned to its CPU build (requirements.lock says torch==2.13.0, which 2.13.0+cpu satisfies): PyTorch's
# CPU index offers it, PyPI's own torch is a multi-GB CUDA build. A machine with the wheel on disk passes
# PIP_FIND_LINKS (and an empty PIP_EXTRA_INDEX_URL); PIP_CERT names a CA bundle mounted for the build.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS=
ARG PIP_CERT=
ARG PIP_INDEX_URL=
# st: sentence-transformers embedders (torch, CPU); s3: S3-compatible upload storage (django-storages).
ARG EXTRAS=st,s3
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN set -eu; \
    packages="ca-certificates gcc g++ libc6-dev"; \
    command -v python3 >/dev/null || packages="$packages python3 python3-venv python3-dev"; \
    apt-get update; apt-get install -y --no-install-recommends $packages; rm -rf /var/lib/apt/lists/*; \
    python3 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml requirements.lock ./
# The pinned dependencies; then out with what only building or testing them needs (C++ headers, test suites:
# ~170 MB), and a check that what is left imports.
RUN set -eu; \
    for name in PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_CERT PIP_INDEX_URL; do \
      eval "[ -n \"\${$name}\" ] || unset $name"; \
    done; \
    /opt/venv/bin/pip install --upgrade pip wheel; \
    /opt/venv/bin/pip install -c requirements.lock ".[${EXTRAS}]"; \
    /opt/venv/bin/pip uninstall -y pip wheel setuptools; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    rm -rf "$site/torch/include"; find "$site" -type d -name tests -prune -exec rm -rf {} +; \
    /opt/venv/bin/python -c 'import torch, sentence_transformers, sklearn, scipy.sparse, transformers'

# ---------------------------------------------------------------- runtime: no compilers, a non-root user
FROM ${BASE_IMAGE} AS runtime
RUN set -eu; \
    packages="ca-certificates tini"; \
    command -v python3 >/dev/null || packages="$packages python3"; \
    apt-get update; apt-get install -y --no-install-recommends $packages; rm -rf /var/lib/apt/lists/*; \
    useradd --system --uid 10001 --user-group --home-dir /home/ragdesk --create-home --shell /usr/sbin/nologin \
      ragdesk
COPY --from=build /opt/venv /opt/venv
COPY . /app
# Static files are part of the image: every web replica serves them itself (whitenoise), nothing to share. The
# code stays root's; the app writes only uploads and var/ (beat's schedule, caches).
RUN cd /app && DEBUG=false SECRET_KEY=build-only DATABASE_URL=postgres://build@127.0.0.1/build \
      /opt/venv/bin/python manage.py collectstatic --noinput -v0 \
    && mkdir -p /data/media && chown ragdesk:ragdesk /data/media /app/var
# Offline at run time: the embedding models and token tables come from packages inside the image.
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=config.settings.base MEDIA_ROOT=/data/media \
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HOST=0.0.0.0 PORT=8000
WORKDIR /app
USER ragdesk
VOLUME ["/data/media"]
EXPOSE 8000
ENTRYPOINT ["tini", "--", "deploy/entrypoint.sh"]
CMD ["web"]
