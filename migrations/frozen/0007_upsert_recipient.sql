-- Revision 0007: outbox.upsert_recipient refuses a blank recipient id and stores
-- the locale in the canonical case of BCP 47 (from sql/functions/registry.sql at 0007).

-- outbox.upsert_recipient: create or update a recipient by the app's user id.
-- A NULL argument leaves that field as it is (on update); pass '' to clear
-- email or phone. locale is a BCP 47 language tag, the format of the locale
-- columns (a language of 2 or 3 letters, then subtags of 2 to 8 letters or
-- digits: fr, fr-CA, zh-Hant-TW, es-419), or 'default'. '_' is read as '-' and
-- case is free: fr_ca, FR-ca and fr-CA are all stored in the canonical case of
-- BCP 47 (language lower, script title, region upper: fr-CA), the form
-- outbox.templates.locale_chain() gives and template versions are matched on.
CREATE OR REPLACE FUNCTION outbox.upsert_recipient(
    recipient    text,
    email        text DEFAULT NULL,
    phone        text DEFAULT NULL,
    locale       text DEFAULT NULL,
    timezone     text DEFAULT NULL,
    quiet_start  time DEFAULT NULL,
    quiet_end    time DEFAULT NULL
) RETURNS bigint
LANGUAGE plpgsql
AS $$
#variable_conflict use_variable
DECLARE
    v_id bigint;
BEGIN
    IF recipient IS NULL OR length(recipient) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: recipient must be 1 to 255 characters'
            USING ERRCODE = 'OB001', COLUMN = 'recipient';
    END IF;
    -- Only white space, as outbox.enqueue spells it (independent of the locale).
    IF recipient ~ '^[\u0009-\u000d\u001c-\u0020\u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$' THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: recipient is blank (white space only)'
            USING ERRCODE = 'OB001', COLUMN = 'recipient';
    END IF;
    IF email IS NOT NULL AND email <> ''
       AND (email !~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$' OR length(email) > 254) THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: email % is not a valid email address', quote_literal(email)
            USING ERRCODE = 'OB001', COLUMN = 'email';
    END IF;
    IF phone IS NOT NULL AND phone <> '' AND phone !~ '^\+[1-9][0-9]{6,14}$' THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: phone % is not an E.164 number (like +14155550123)',
            quote_literal(phone) USING ERRCODE = 'OB001', COLUMN = 'phone';
    END IF;
    IF locale IS NOT NULL THEN
        IF lower(locale) = 'default' THEN
            locale := 'default';
        ELSIF replace(locale, '_', '-') ~ '^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$' THEN
            SELECT string_agg(CASE WHEN t.n = 1 THEN lower(t.part)                   -- language
                                   WHEN t.part ~ '^[A-Za-z]{4}$' THEN initcap(t.part)  -- script
                                   WHEN t.part ~ '^([A-Za-z]{2}|[0-9]{3})$' THEN upper(t.part)  -- region
                                   ELSE lower(t.part) END,                          -- variant
                              '-' ORDER BY t.n)
            INTO locale
            FROM unnest(string_to_array(replace(locale, '_', '-'), '-')) WITH ORDINALITY AS t(part, n);
        ELSE
            RAISE EXCEPTION 'outbox.upsert_recipient: locale % is not a language tag (like fr or fr-CA, or ''default'')',
                quote_literal(locale) USING ERRCODE = 'OB001', COLUMN = 'locale';
        END IF;
    END IF;
    IF timezone IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = timezone) THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: unknown time zone % (use an IANA name like Europe/Paris)',
            quote_literal(timezone) USING ERRCODE = 'OB001', COLUMN = 'timezone';
    END IF;
    IF (quiet_start IS NULL) <> (quiet_end IS NULL) THEN
        RAISE EXCEPTION 'outbox.upsert_recipient: give both quiet_start and quiet_end, or neither'
            USING ERRCODE = 'OB001', COLUMN = 'quiet_start';
    END IF;

    INSERT INTO outbox.recipients AS r (external_id, email, phone, locale, timezone, quiet_start, quiet_end)
    VALUES (recipient, nullif(email, ''), nullif(phone, ''), coalesce(locale, 'default'),
            coalesce(timezone, 'UTC'), quiet_start, quiet_end)
    ON CONFLICT ON CONSTRAINT recipients_external_id_key DO UPDATE SET
        email       = CASE WHEN email IS NULL THEN r.email ELSE nullif(email, '') END,
        phone       = CASE WHEN phone IS NULL THEN r.phone ELSE nullif(phone, '') END,
        locale      = coalesce(locale, r.locale),
        timezone    = coalesce(timezone, r.timezone),
        quiet_start = coalesce(quiet_start, r.quiet_start),
        quiet_end   = coalesce(quiet_end, r.quiet_end),
        updated_at  = now()
    RETURNING r.id INTO v_id;
    RETURN v_id;
END
$$;
COMMENT ON FUNCTION outbox.upsert_recipient(text, text, text, text, text, time, time) IS
    'Create or update a recipient by the application''s user id; NULL leaves a field unchanged, '''' clears email/phone.';
