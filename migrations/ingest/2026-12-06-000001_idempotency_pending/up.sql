-- A request with an Idempotency-Key claims its key before it publishes (response NULL: pending)
-- and writes its answer after JetStream's ack, so a retry knows an earlier attempt may have
-- stored its events even when that answer was never written.
ALTER TABLE idempotency_keys ALTER COLUMN response DROP NOT NULL;
