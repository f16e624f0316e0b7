-- pgbench: the same job as a verify, the PostgreSQL way: select the key by the HMAC digest of
-- its secret, then insert an audit row, in one transaction with synchronous commit.
\set k random(1, 1000)
BEGIN;
SELECT owner, scopes FROM api_keys WHERE digest = sha256(('key-' || :k)::bytea);
INSERT INTO audit (key_digest, outcome, client) VALUES (sha256(('key-' || :k)::bytea), 'VALID', '127.0.0.1');
COMMIT;
