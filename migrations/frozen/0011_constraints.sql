-- Revision 0011: the checks that name the new kinds of things.
--
-- events.kind gains 'erased' (outbox.erase_recipient records one); rate_limits
-- gains the scope 'api_key' (one bucket per API key of `outbox api`), named '*'
-- for every key or by one key's id. Targeted: the constraints are replaced, the
-- tables and their rows are not touched. Same as sql/schema.sql and
-- sql/ratelimit.sql.
ALTER TABLE outbox.events
    DROP CONSTRAINT events_kind_check,
    ADD CONSTRAINT events_kind_check CHECK (kind IN (
        'created', 'processing', 'sent', 'delivered', 'retry', 'dead',
        'expired', 'cancelled', 'suppressed', 'released', 'recovered',
        'deferred', 'requeued', 'receipt', 'device_deactivated',
        'template_activated', 'cancel_requested', 'erased'));

ALTER TABLE outbox.rate_limits
    DROP CONSTRAINT rate_limits_scope_known,
    ADD CONSTRAINT rate_limits_scope_known CHECK (scope IN ('provider', 'recipient', 'api_key')),
    ADD CONSTRAINT rate_limits_api_key_name_valid
        CHECK (scope <> 'api_key' OR name = '*' OR name ~ '^[1-9][0-9]{0,18}$');
COMMENT ON COLUMN outbox.rate_limits.scope IS
    '''provider'': one bucket shared by every send through that provider; '
    '''recipient'': one bucket per recipient (email, sms) or per device (push) on that channel; '
    '''api_key'': one bucket per API key of `outbox api`, one token per request.';
COMMENT ON COLUMN outbox.rate_limits.name IS
    'For scope provider: the provider name (twilio, vonage, sendgrid, mailchimp, apns, fcm, console); '
    'for scope recipient: the channel (email, sms, push); '
    'for scope api_key: ''*'' (every key) or one key''s id (that key instead).';
