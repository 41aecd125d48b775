-- Revision 0015: API keys may expire (from sql/api_keys.sql at 0015).
ALTER TABLE outbox.api_keys
    ADD COLUMN expires_at timestamptz
        CONSTRAINT api_keys_expires_after_creation CHECK (expires_at > created_at);
COMMENT ON COLUMN outbox.api_keys.expires_at IS 'When it stops working by itself; NULL: it does not expire.';

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
COMMENT ON FUNCTION outbox.api_authenticate(bytea) IS
    'The live API key with this SHA-256 (id, name, scopes) and its rate limit''s answer for one request '
    '(wait_seconds = 0: go ahead); no row for an unknown, revoked or expired key.';
