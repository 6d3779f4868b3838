-- API keys (lifecycle.db.api_keys.ApiKeysRepo): stored as bcrypt hashes, found by their public
-- key_id (uq_api_keys_key_id). The hash leaves the database only in api_keys.by_key_id.

-- fragment: columns
id, name, key_id, scopes, created_at, last_used_at, expires_at, revoked_at

-- name: create
INSERT INTO api_keys (name, key_id, key_hash, scopes, expires_at)
VALUES (%(name)s, %(key_id)s, %(key_hash)s, %(scopes)s, %(expires_at)s)
RETURNING {{api_keys.columns}}

-- name: by_key_id
-- The row to verify against: its hash, and the database's clock for the expiry check.
SELECT {{api_keys.columns}}, key_hash, now() AS db_now FROM api_keys WHERE key_id = %(key_id)s

-- name: touch
-- last_used_at is written at most once per resolution interval, not on every request.
UPDATE api_keys SET last_used_at = now()
WHERE id = %(id)s AND (last_used_at IS NULL OR last_used_at < now() - CAST(%(resolution)s AS interval))
RETURNING last_used_at

-- name: revoke
-- Idempotent: a second revoke keeps the first time.
UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = %(id)s
RETURNING {{api_keys.columns}}

-- name: get
SELECT {{api_keys.columns}} FROM api_keys WHERE id = %(id)s

-- name: list
SELECT {{api_keys.columns}} FROM api_keys ORDER BY created_at, id

-- name: list_active
SELECT {{api_keys.columns}} FROM api_keys
WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at, id
