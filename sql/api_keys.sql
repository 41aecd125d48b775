-- API keys of the HTTP API (`outbox api`, docs/api.md). Installed by migration
-- 0011 (migrations/versions/0011_api_keys.py).
--
-- A key is 'obx_' followed by 43 random URL-safe characters (256 bits), shown
-- once by `outbox api-keys create`. Only its SHA-256 is stored: a key this
-- random needs no slow hash, and the server looks it up by its hash, so the
-- key itself never reaches the database (nor its logs or pg_stat_activity).
-- The first 12 characters are kept in the clear to tell keys apart in lists.
--
-- Keys are never deleted: a revoked key keeps its row (revoked_at), so `list`
-- shows what existed and when it stopped working. A key may be made to expire
-- (expires_at, `outbox api-keys create --expires-in 90d`): from then on it is
-- refused as a revoked key is, and it keeps its name until it is revoked.

CREATE TABLE outbox.api_keys (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          text NOT NULL
                  CONSTRAINT api_keys_name_valid CHECK (name ~ '^[a-z0-9][a-z0-9_.-]{0,63}$'),
    prefix        text NOT NULL
                  CONSTRAINT api_keys_prefix_valid CHECK (prefix ~ '^obx_[A-Za-z0-9_-]{8}$'),
    key_hash      bytea NOT NULL
                  CONSTRAINT api_keys_key_hash_key UNIQUE
                  CONSTRAINT api_keys_key_hash_sha256 CHECK (octet_length(key_hash) = 32),
    scopes        text[] NOT NULL
                  CONSTRAINT api_keys_scopes_known CHECK (
                      cardinality(scopes) >= 1
                      AND scopes <@ ARRAY['admin', 'devices', 'enqueue', 'read', 'recipients']::text[]),
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    expires_at    timestamptz
                  CONSTRAINT api_keys_expires_after_creation CHECK (expires_at > created_at)
);
-- One live key per name (a revoked name can be used again).
CREATE UNIQUE INDEX api_keys_live_name ON outbox.api_keys (name) WHERE revoked_at IS NULL;
COMMENT ON TABLE outbox.api_keys IS
    'API keys of `outbox api`, stored as SHA-256 hashes; managed with `outbox api-keys create|list|revoke`.';
COMMENT ON COLUMN outbox.api_keys.name IS 'What the key is for (mobile-app, billing); unique among live keys; logged with each request.';
COMMENT ON COLUMN outbox.api_keys.prefix IS 'The first 12 characters of the key (obx_ and 8 more), to recognise it; not enough to use it.';
COMMENT ON COLUMN outbox.api_keys.key_hash IS 'SHA-256 of the whole key. The key itself is never stored.';
COMMENT ON COLUMN outbox.api_keys.scopes IS
    'What the key may do: devices (register/deactivate devices), enqueue (enqueue, cancel), read (GET), '
    'recipients (recipients, preferences, erasure), admin (all of them).';
COMMENT ON COLUMN outbox.api_keys.created_at IS 'When the key was created.';
COMMENT ON COLUMN outbox.api_keys.created_by IS 'Who created it (cli:<user>).';
COMMENT ON COLUMN outbox.api_keys.last_used_at IS 'Last accepted request, to the minute (updated at most once a minute).';
COMMENT ON COLUMN outbox.api_keys.revoked_at IS 'When it was revoked; NULL while it works.';
COMMENT ON COLUMN outbox.api_keys.expires_at IS 'When it stops working by itself; NULL: it does not expire.';

-- Every key's default rate limit (a DBA edits it; a row named by a key's id
-- replaces it for that key: `outbox api-keys create --rate-per-second`).
INSERT INTO outbox.rate_limits (scope, name, rate_per_second, burst, description)
VALUES ('api_key', '*', 20, 100, 'Every API key: 20 requests per second, bursts of 100.');


-- outbox.api_authenticate: the API server's question for each request. Given
-- the SHA-256 of the key presented, the live key's id, name and scopes and
-- whether its rate limit lets this request through (wait_seconds = 0), or no
-- row for a key that does not exist, was revoked or has expired. Each call
-- takes one token from the key's bucket (outbox.take_tokens, sql/ratelimit.sql):
-- one per request, whether or not the request is then allowed.
--
-- SECURITY DEFINER so the API's role reads no key hashes and writes no buckets
-- itself: it may only ask this.
CREATE OR REPLACE FUNCTION outbox.api_authenticate(key_hash bytea)
RETURNS TABLE (key_id bigint, name text, scopes text[], wait_seconds double precision,
               limited_by text)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    v_id      bigint;
    v_name    text;
    v_scopes  text[];
    v_limit   text;
BEGIN
    SELECT k.id, k.name, k.scopes INTO v_id, v_name, v_scopes
    FROM outbox.api_keys k
    WHERE k.key_hash = api_authenticate.key_hash AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now());
    IF NOT FOUND THEN
        RETURN;
    END IF;
    UPDATE outbox.api_keys k SET last_used_at = now()
    WHERE k.id = v_id AND (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute');
    v_limit := CASE WHEN EXISTS (SELECT 1 FROM outbox.rate_limits l
                                 WHERE l.scope = 'api_key' AND l.name = v_id::text)
                    THEN v_id::text ELSE '*' END;
    SELECT t.wait_seconds, t.limited_by INTO wait_seconds, limited_by
    FROM outbox.take_tokens(ARRAY[1], ARRAY['api_key'], ARRAY[v_limit], ARRAY['key:' || v_id]) t;
    key_id := v_id;
    name := v_name;
    scopes := v_scopes;
    RETURN NEXT;
END
$$;
REVOKE EXECUTE ON FUNCTION outbox.api_authenticate(bytea) FROM PUBLIC;
COMMENT ON FUNCTION outbox.api_authenticate(bytea) IS
    'The live API key with this SHA-256 (id, name, scopes) and its rate limit''s answer for one request '
    '(wait_seconds = 0: go ahead); no row for an unknown, revoked or expired key.';
