-- Revision 0011, downgrade: no API keys, no erasure, the checks of 0010.
--
-- The outbox_api role stays (cluster-wide, like the roles of 0003); what it
-- holds in this database goes. Rows only this revision could write go too, or
-- the old checks could not be restored: the 'erased' events (the record of
-- erasures; the erasures themselves are not undone) and the api_key rate
-- limits and buckets.
DO $revoke$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox_api') THEN
        REVOKE ALL ON ALL TABLES IN SCHEMA outbox FROM outbox_api;
        REVOKE ALL ON ALL FUNCTIONS IN SCHEMA outbox FROM outbox_api;
        REVOKE ALL ON SCHEMA outbox FROM outbox_api;
        IF to_regclass('public.outbox_alembic_version') IS NOT NULL THEN
            REVOKE SELECT ON public.outbox_alembic_version FROM outbox_api;
        END IF;
    END IF;
END
$revoke$;

DROP FUNCTION outbox.api_authenticate(bytea);
DROP TABLE outbox.api_keys;
DROP FUNCTION outbox.erase_recipient(text, text);
DROP FUNCTION outbox.redact(text, text[]);

-- events refuses DELETE outside retention (0009's events_no_delete); this
-- downgrade, run by the owner, is one of the few deletes it lets through.
SELECT set_config('outbox.retention', 'on', true);
DELETE FROM outbox.events WHERE kind = 'erased';
SELECT set_config('outbox.retention', 'off', true);
ALTER TABLE outbox.events
    DROP CONSTRAINT events_kind_check,
    ADD CONSTRAINT events_kind_check CHECK (kind IN (
        'created', 'processing', 'sent', 'delivered', 'retry', 'dead',
        'expired', 'cancelled', 'suppressed', 'released', 'recovered',
        'deferred', 'requeued', 'receipt', 'device_deactivated',
        'template_activated', 'cancel_requested'));

DELETE FROM outbox.rate_buckets WHERE scope = 'api_key';
DELETE FROM outbox.rate_limits WHERE scope = 'api_key';
ALTER TABLE outbox.rate_limits
    DROP CONSTRAINT rate_limits_api_key_name_valid,
    DROP CONSTRAINT rate_limits_scope_known,
    ADD CONSTRAINT rate_limits_scope_known CHECK (scope IN ('provider', 'recipient'));
COMMENT ON COLUMN outbox.rate_limits.scope IS
    '''provider'': one bucket shared by every send through that provider; '
    '''recipient'': one bucket per recipient (email, sms) or per device (push) on that channel.';
COMMENT ON COLUMN outbox.rate_limits.name IS
    'For scope provider: the provider name (twilio, vonage, sendgrid, mailchimp, apns, fcm, console); '
    'for scope recipient: the channel (email, sms, push).';
