# The Outbox application image: `outbox worker`, `outbox webhooks`, `outbox migrate`,
# `outbox sandbox`, `outbox status`, ... (the ENTRYPOINT is the `outbox` command).
#
#   docker build -t outbox .
#   docker run --rm -e OUTBOX_DATABASE_URL=postgresql://... outbox migrate
#
# The project is installed editable from /app on purpose: the SQL a DBA reads
# (sql/), the migrations (migrations/, alembic.ini) live next to the package and
# are read from there at run time, and a wheel would leave them out.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when
# the dependencies change, not on every code change.
COPY pyproject.toml README.md ./
RUN mkdir -p outbox workers \
 && touch outbox/__init__.py workers/__init__.py \
 && pip install -e . \
 && rm -rf outbox workers

COPY . .
RUN pip install --no-deps -e . \
 && useradd --system --uid 10001 --home-dir /var/lib/outbox --shell /usr/sbin/nologin outbox \
 && mkdir -p /var/lib/outbox/sandbox \
 && chown -R outbox /var/lib/outbox

# Never root at run time. The data dir holds the sandbox's state (keys, local CA);
# the embedded PostgreSQL is not used in containers: OUTBOX_DATABASE_URL is required.
USER outbox
ENV OUTBOX_DATA_DIR=/var/lib/outbox \
    OUTBOX_LOG_FORMAT=json

ENTRYPOINT ["outbox"]
CMD ["worker"]
