DELETE FROM idempotency_keys WHERE response IS NULL;
ALTER TABLE idempotency_keys ALTER COLUMN response SET NOT NULL;
