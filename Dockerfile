# syntax=docker/dockerfile:1
# One image for every JourneyWatch service; docker-compose.yml picks the command:
#   python -m journeywatch.ingest | journeywatch.detector | journeywatch.api
#   python -m journeywatch.shared.db migrate   (one-shot)
# Build from the repo root: docker build -t journeywatch .

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first (pinned by the root constraints), so code edits reuse this layer.
COPY constraints.txt ./
COPY shared/pyproject.toml shared/pyproject.toml
COPY services/ingest/pyproject.toml services/ingest/pyproject.toml
COPY services/detector/pyproject.toml services/detector/pyproject.toml
COPY services/api/pyproject.toml services/api/pyproject.toml
COPY services/notifier/pyproject.toml services/notifier/pyproject.toml
COPY services/cli/pyproject.toml services/cli/pyproject.toml
COPY shared/src shared/src
COPY services/ingest/src services/ingest/src
COPY services/detector/src services/detector/src
COPY services/api/src services/api/src
COPY services/notifier/src services/notifier/src
COPY services/cli/src services/cli/src
# Regular (non-editable) installs of every member into the venv, pinned by constraints.txt.
RUN pip install -c constraints.txt \
      ./shared ./services/ingest ./services/detector ./services/api ./services/notifier ./services/cli \
 && python -c "import journeywatch.ingest, journeywatch.detector, journeywatch.api, journeywatch.notifier.app, journeywatch.shared.db"

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 journeywatch \
 && useradd --system --uid 10001 --gid journeywatch --home-dir /app --shell /usr/sbin/nologin journeywatch \
 && mkdir -p /app/var \
 && chown -R journeywatch:journeywatch /app
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    JOURNEYWATCH_INGEST_HOST=0.0.0.0 \
    JOURNEYWATCH_API_HOST=0.0.0.0 \
    JOURNEYWATCH_DETECTOR_METRICS_HOST=0.0.0.0 \
    JOURNEYWATCH_NOTIFIER_METRICS_HOST=0.0.0.0 \
    JOURNEYWATCH_LOG_FORMAT=json
WORKDIR /app
USER journeywatch:journeywatch
EXPOSE 8000 8001 9102 9103
# Services exit 0 on SIGTERM after a clean shutdown (flush, commit, checkpoint).
STOPSIGNAL SIGTERM
CMD ["python", "-m", "journeywatch.api"]
