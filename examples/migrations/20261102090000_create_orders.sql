-- migrate:up
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    total_cents bigint NOT NULL CHECK (total_cents >= 0),
    status text NOT NULL DEFAULT 'new',
    created_at timestamptz NOT NULL DEFAULT now()
);

-- migrate:down
DROP TABLE orders;
