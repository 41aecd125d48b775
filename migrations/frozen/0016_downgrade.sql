-- Revision 0016's downgrade: the foreign key comes back (every template_id names a
-- stored version: none could be deleted meanwhile), template_immutable as 0001
-- made it (frozen/0001_schema.sql), and the delete guard goes.
DROP TRIGGER templates_never_deleted ON outbox.templates;
DROP FUNCTION outbox.forbid_template_delete();

CREATE OR REPLACE FUNCTION outbox.template_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.key, NEW.channel, NEW.locale, NEW.version, NEW.subject, NEW.body, NEW.html_body,
        NEW.title, NEW.content_hash)
       IS DISTINCT FROM
       (OLD.key, OLD.channel, OLD.locale, OLD.version, OLD.subject, OLD.body, OLD.html_body,
        OLD.title, OLD.content_hash) THEN
        RAISE EXCEPTION 'template versions are immutable: create a new version of % instead', OLD.key
            USING ERRCODE = 'OB005';
    END IF;
    RETURN NEW;
END $$;

ALTER TABLE outbox.deliveries ADD CONSTRAINT deliveries_template_id_fkey
    FOREIGN KEY (template_id) REFERENCES outbox.templates (id);
COMMENT ON COLUMN outbox.deliveries.template_id IS 'The exact template version rendered for this delivery.';
