-- migrate:up
ALTER TABLE orders ADD COLUMN notes text;

-- migrate:down
ALTER TABLE orders DROP COLUMN notes;
