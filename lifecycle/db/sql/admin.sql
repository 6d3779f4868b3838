-- Statements on a server's maintenance database, not on the lifecycle schema
-- (lifecycle.devstack.postgres: the embedded development server).

-- name: database_exists
-- Whether the database %(name)s exists (CREATE DATABASE itself is composed with sql.Identifier).
SELECT 1 FROM pg_database WHERE datname = %(name)s
