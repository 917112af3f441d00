-- A deployment's second migration, which fails half-way: its first
-- statements run, then the constraint meets rows that break it, and the
-- whole migration rolls back with its transaction.
-- migrate:up
UPDATE orders SET status = 'paid' WHERE total_cents > 0;
ALTER TABLE orders ADD COLUMN paid_at timestamptz;
ALTER TABLE orders ADD CONSTRAINT orders_paid_has_time CHECK (status <> 'paid' OR paid_at IS NOT NULL);

-- migrate:down
ALTER TABLE orders DROP CONSTRAINT orders_paid_has_time;
ALTER TABLE orders DROP COLUMN paid_at;
