-- Sample data for the demo and the drills: a few thousand users and orders.
INSERT INTO users (email, name)
SELECT 'user' || g || '@example.com', 'User ' || g FROM generate_series(1, 2000) g;
INSERT INTO orders (user_id, total_cents, status)
SELECT 1 + (g % 2000), (g * 37) % 10000, CASE WHEN g % 3 = 0 THEN 'paid' ELSE 'new' END
FROM generate_series(1, 20000) g;
