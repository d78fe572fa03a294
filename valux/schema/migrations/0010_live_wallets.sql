-- Live wallets (issue 11): a wallet may exist before its agent (created on its own through
-- POST /api/v1/wallets, owned by a user) and lives on a chain at an address. Its key
-- record is in its journal stream only (ciphertext, salt, KDF parameters), never here.
ALTER TABLE wallets ALTER COLUMN agent_id SET DEFAULT '';
ALTER TABLE wallets ADD COLUMN chain text NOT NULL DEFAULT 'paper';
ALTER TABLE wallets ADD COLUMN address text;
ALTER TABLE wallets ADD COLUMN owner_id text REFERENCES users (id);
ALTER TABLE wallets ADD COLUMN deleted_at timestamptz;
CREATE INDEX wallets_owner ON wallets (owner_id) WHERE deleted_at IS NULL;
-- The API refuses a second live wallet on an address (importing a key twice).
CREATE INDEX wallets_chain_address ON wallets (chain, address) WHERE address IS NOT NULL;
