# The portal: web (gunicorn + WhiteNoise), Celery workers and beat, one image.
#   docker build -t slipway/portal .                  (python:3.11-slim-bookworm)
#   docker build --build-arg BASE_IMAGE=… .           (any Debian bookworm with python3 and pip)
# docker-compose.yml builds it; offline, tests/compose builds it on a local
# Debian stand-in (devstack/standins.py) that already holds git and the
# docker CLI, so the apt step below has nothing to do there.
# Works with the legacy builder too (docker-compose 1.29 uses it by default).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    HOME=/srv/slipway \
    SLIPWAY_STATE_DIR=/srv/slipway/var \
    SLIPWAY_BUILDKIT_DOCKER=/usr/bin/docker \
    DOCKER_BUILDKIT=1

# The deploy worker fetches sources with git and builds with BuildKit through
# Debian's docker CLI (20.10: BuildKit built in; the build step sets
# DOCKER_BUILDKIT=1). Only the CLI binary is taken from the docker.io package:
# the engine is the host's (the socket) or a remote DOCKER_HOST.
RUN set -eu; \
    if ! command -v git >/dev/null || [ ! -x /usr/bin/docker ]; then \
      apt-get update; \
      apt-get install -y --no-install-recommends git ca-certificates openssh-client; \
      if [ ! -x /usr/bin/docker ]; then \
        cd /tmp && apt-get download docker.io \
        && dpkg-deb --fsys-tarfile docker.io_*.deb | tar -xO ./usr/bin/docker > /usr/bin/docker \
        && chmod 0755 /usr/bin/docker && rm -f docker.io_*.deb; \
      fi; \
      rm -rf /var/lib/apt/lists/*; \
    fi; \
    git --version; /usr/bin/docker --version

COPY requirements-production.txt /tmp/requirements-production.txt
RUN python3 -m pip install -r /tmp/requirements-production.txt && rm /tmp/requirements-production.txt

# An unprivileged user (written directly: the same line works on any base).
# The deploy worker gets the Docker socket's group through compose's group_add.
# The compose demo's repository is a host checkout mounted read-only, owned by another
# uid: git refuses such a repository unless it is listed as safe (that path only).
RUN echo 'slipway:x:10001:10001:Slipway:/srv/slipway:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'slipway:x:10001:' >> /etc/group \
 && mkdir -p /srv/slipway/app /srv/slipway/var/work \
 && printf '[safe]\n\tdirectory = /srv/demo-repository\n\tdirectory = /srv/demo-repository/.git\n' > /srv/slipway/.gitconfig

WORKDIR /srv/slipway/app
COPY manage.py ./
COPY deploy/ deploy/
COPY workers/ workers/
COPY portal/ portal/
# The detector's option schema, which the console form reads (portal/console/options.py): only this
# file of function/, at the same path relative to the application as in the repository, so the
# module finds it in both; the rest of function/ is the Lambda's and loads OpenCV.
COPY function/src/detector/options.json function/src/detector/options.json
# Static files: collected once here (hashed, compressed names; WhiteNoise serves
# them). Settings refuse to load without a secret key: a throwaway one, used by
# this step only.
RUN python3 -m compileall -q portal workers deploy \
 && DJANGO_SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    SLIPWAY_LOG_FORMAT=text python3 manage.py collectstatic --noinput -v 0 \
 && chown -R 10001:10001 /srv/slipway/var /srv/slipway/.gitconfig

USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "portal.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
