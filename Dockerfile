# syntax=docker/dockerfile:1
# Tsunagu: one image for every process (daphne web, Celery worker, Celery beat, one-off migrate).
# The default command serves HTTP and WebSockets with daphne on 0.0.0.0:8000; docker-compose.yml picks the
# command of the other services. Configuration comes from the environment: see .env.example.
FROM python:3.11-slim

# PYTHONPATH: the source in /app comes first, so BASE_DIR (and with it LOCALE_PATHS) is /app.
# STATE_DIR: what the service generates and keeps (VAPID keys, uploads, beat schedule); a volume.
# STATIC_ROOT: collected at build time into the image, not into the volume, so an upgrade never serves
# stale files.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    STATE_DIR=/var/lib/tsunagu \
    STATIC_ROOT=/app/staticfiles

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a source change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
    && rm -rf build ./*.egg-info

# collectstatic imports the production settings, which refuse to load without these; none of them is
# used to connect anywhere. STATE_DIR points at a throwaway directory so that nothing the settings
# generate on import (VAPID keys) is baked into the image.
RUN SECRET_KEY=build-time-placeholder-only-used-by-collectstatic-never-at-runtime \
    DATABASE_URL=postgres://build@127.0.0.1:5432/build \
    REDIS_URL=redis://127.0.0.1:6379/0 \
    EMAIL_URL=console:// \
    SITE_URL=http://localhost \
    STATE_DIR=/tmp/build-state \
    python manage.py collectstatic --noinput \
    && rm -rf /tmp/build-state

RUN groupadd --system --gid 10001 tsunagu \
    && useradd --system --uid 10001 --gid tsunagu --home-dir /var/lib/tsunagu --no-create-home \
        --shell /usr/sbin/nologin tsunagu \
    && mkdir -p /var/lib/tsunagu \
    && chown tsunagu:tsunagu /var/lib/tsunagu \
    && chmod 0700 /var/lib/tsunagu

USER tsunagu
VOLUME ["/var/lib/tsunagu"]
EXPOSE 8000

# A 30 s handshake limit: daphne's default of 5 s drops sockets when everyone opens the app at once.
CMD ["daphne", "-b", "0.0.0.0", "-p", "8000", "--websocket_connect_timeout", "30", "config.asgi:application"]
