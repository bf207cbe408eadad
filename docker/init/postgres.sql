CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL, plan text);
INSERT INTO customers (email, plan) VALUES ('a@example.com', 'free'), ('b@example.com', 'pro');
CREATE PUBLICATION logtide_app FOR ALL TABLES;
