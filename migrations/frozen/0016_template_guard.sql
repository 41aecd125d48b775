-- Revision 0016: deliveries.template_id loses its foreign key; template versions
-- cannot be deleted instead (sql/schema.sql).
--
-- The foreign key's check ran on every record that set template_id (NULL -> the
-- version sent): SELECT ... FOR KEY SHARE on the one template row that every
-- delivery of a blast shares. Two workers recording at once made that row's xmax
-- a MultiXact, a new one for nearly every record transaction, and each lock
-- wrote the template's heap page to the WAL again. What the key promised — every
-- template_id names a stored version — now holds because a version is never
-- deleted (a statement trigger refuses DELETE and TRUNCATE on outbox.templates)
-- and its id never changes (template_immutable compares the id too), and the
-- only writer of template_id, the worker's record, writes the id its claim read
-- from outbox.templates.
ALTER TABLE outbox.deliveries DROP CONSTRAINT deliveries_template_id_fkey;
COMMENT ON COLUMN outbox.deliveries.template_id IS
    'The exact template version rendered for this delivery (no foreign key: versions are never deleted, see templates_never_deleted).';

CREATE FUNCTION outbox.forbid_template_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'template versions are never deleted (deliveries name the version they were rendered from): activate another version instead'
        USING ERRCODE = 'OB005';
END $$;
COMMENT ON FUNCTION outbox.forbid_template_delete() IS
    'Refuses DELETE and TRUNCATE on outbox.templates: deliveries.template_id relies on versions staying.';
CREATE TRIGGER templates_never_deleted BEFORE DELETE OR TRUNCATE ON outbox.templates
    FOR EACH STATEMENT EXECUTE FUNCTION outbox.forbid_template_delete();

-- Template content and id are immutable; only the active flag may change.
CREATE OR REPLACE FUNCTION outbox.template_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.key, NEW.channel, NEW.locale, NEW.version, NEW.subject, NEW.body, NEW.html_body,
        NEW.title, NEW.content_hash)
       IS DISTINCT FROM
       (OLD.id, OLD.key, OLD.channel, OLD.locale, OLD.version, OLD.subject, OLD.body, OLD.html_body,
        OLD.title, OLD.content_hash) THEN
        RAISE EXCEPTION 'template versions are immutable: create a new version of % instead', OLD.key
            USING ERRCODE = 'OB005';
    END IF;
    RETURN NEW;
END $$;
