# The Outbox application image: `outbox worker`, `outbox webhooks`, `outbox api`, `outbox migrate`,
# `outbox sandbox`, `outbox status`, ... (the ENTRYPOINT is the `outbox` command).
#
#   docker build -t outbox .
#   docker run --rm -e OUTBOX_DATABASE_URL=postgresql://... outbox migrate
#
# The project is installed as a wheel would be (not editable): the wheel carries
# the SQL (outbox/sql/) and the migrations (outbox/migrations/) inside the package.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone: this layer is rebuilt only when
# the dependencies change, not on every code change.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY . .
RUN pip install --no-deps . \
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
