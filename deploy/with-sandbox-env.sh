#!/bin/sh
# Run a command with the provider sandbox's settings (docker-compose.yml).
#
# `outbox sandbox` writes OUTBOX_* settings that point every provider adapter at
# it (URLs, test credentials, its local CA) into <state dir>/outbox.env. The
# workers and the webhook receiver wait for that file, load it, then exec the
# command. In production there is no sandbox: set the real providers' OUTBOX_*
# variables and run `outbox worker` directly.
set -eu
env_file="${OUTBOX_SANDBOX_ENV:-/var/lib/outbox/sandbox/outbox.env}"
waited=0
until [ -f "$env_file" ]; do
    if [ "$waited" -ge 120 ]; then
        echo "with-sandbox-env: $env_file did not appear in 60 s (is the sandbox running?)" >&2
        exit 1
    fi
    sleep 0.5
    waited=$((waited + 1))
done
set -a
. "$env_file"
set +a
exec "$@"
