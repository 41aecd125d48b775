-- The HTTP API (`outbox api`, outbox/apiserver/) and its keys (`outbox api-keys`).
-- Writes go through the producer functions (queries in api.sql); these are the
-- key checks and the reads.

-- name: api_authenticate
-- The live key with this SHA-256, and whether its rate limit lets one request through.
SELECT a.key_id, a.name, a.scopes, a.wait_seconds, a.limited_by
FROM outbox.api_authenticate(%(key_hash)s) a;

-- name: api_recipient
-- One recipient by the application's user id, with its devices and preferences.
SELECT r.external_id AS recipient, r.email, r.phone, r.locale, r.timezone,
       r.quiet_start, r.quiet_end, r.created_at, r.updated_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'id', d.id, 'platform', d.platform, 'token', d.token,
                        'environment', d.environment, 'active', d.active,
                        'deactivated_at', d.deactivated_at, 'deactivated_reason', d.deactivated_reason,
                        'registered_at', d.registered_at) ORDER BY d.id)
                 FROM outbox.devices d WHERE d.recipient_id = r.id), '[]') AS devices,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'channel', p.channel, 'category', p.category, 'opted_in', p.opted_in,
                        'updated_at', p.updated_at) ORDER BY p.channel, p.category)
                 FROM outbox.preferences p WHERE p.recipient_id = r.id), '[]') AS preferences
FROM outbox.recipients r
WHERE r.external_id = %(recipient)s;

-- name: api_key_create
-- A new key (its hash); the schema owner runs it (`outbox api-keys create`).
-- expires_in: seconds from now (the database's clock) until it stops working, or NULL.
INSERT INTO outbox.api_keys (name, prefix, key_hash, scopes, created_by, expires_at)
VALUES (%(name)s, %(prefix)s, %(key_hash)s, %(scopes)s::text[], %(created_by)s,
        now() + %(expires_in)s::float8 * interval '1 second')
RETURNING id, name, prefix, scopes, created_at, expires_at;

-- name: api_key_rate_limit
-- One key's own rate limit instead of every key's ('*').
INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst, description)
VALUES ('api_key', %(key_id)s::text, %(rate_per_second)s, %(burst)s, %(description)s)
ON CONFLICT (scope, name) DO UPDATE
SET rate_per_second = excluded.rate_per_second, burst = excluded.burst,
    description = excluded.description, updated_at = now();

-- name: api_key_list
-- Every key, never its hash; live ones first, newest first. The rate limit shown
-- is the one that applies: the key's own, else every key's.
SELECT k.id, k.name, k.prefix, k.scopes, k.created_at, k.created_by, k.last_used_at, k.revoked_at,
       k.expires_at, coalesce(own.rate_per_second, every.rate_per_second) AS rate_per_second,
       coalesce(own.burst, every.burst) AS burst
FROM outbox.api_keys k
LEFT JOIN outbox.rate_limits own ON own.scope = 'api_key' AND own.name = k.id::text
LEFT JOIN outbox.rate_limits every ON every.scope = 'api_key' AND every.name = '*'
ORDER BY k.revoked_at IS NOT NULL, k.id DESC;

-- name: api_key_revoke
-- Revoke the live key of this name or id (NULL: no id given); requests with it are
-- refused from now on.
UPDATE outbox.api_keys k SET revoked_at = now()
WHERE k.revoked_at IS NULL
  AND (k.name = %(name)s OR k.id = %(key_id)s::bigint)
RETURNING k.id, k.name, k.prefix, k.revoked_at;
