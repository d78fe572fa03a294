-- Users (issue 13): accounts and their login identities, refresh-token families, API keys,
-- signal webhooks, the audit log, and who owns which agent and signal. Written by the API
-- process only (valux.api.users_pg); the trading actors never read these tables, so they
-- are unchanged. Positions, trades and wallets belong to their agent's owner.

CREATE TABLE users (
    id          text        PRIMARY KEY,                -- 'u_' + 32 hex digits
    email       text,                                   -- NULL for a wallet-only user
    role        text        NOT NULL CHECK (role IN ('user', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email ON users (lower(email)) WHERE email IS NOT NULL;

-- The owner of everything that existed before users: the first admin. It has no way to
-- log in yet; at first start valux gives it an e-mail and a password (printed once), or
-- `valux user create EMAIL --admin` does.
INSERT INTO users (id, email, role) VALUES ('u_admin', NULL, 'admin');

-- How a user logs in: an e-mail and password, or a wallet (one user may link several).
CREATE TABLE user_identities (
    kind             text        NOT NULL CHECK (kind IN ('password', 'siwe', 'siws')),
    subject          text        NOT NULL,   -- lower-case e-mail | EIP-55 address | base58 key
    user_id          text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    secret_hash      text,                   -- argon2id, password identities only
    failures         integer     NOT NULL DEFAULT 0,      -- the lockout's count ...
    first_failure_at timestamptz,                         -- ... its window ...
    locked_until     timestamptz,                         -- ... and the lock
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_login_at    timestamptz,
    PRIMARY KEY (kind, subject)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

-- Refresh tokens: only their SHA-256 is stored. A login starts a family; each refresh marks
-- the presented token used and adds its child; a used token presented again revokes the
-- whole family.
CREATE TABLE refresh_tokens (
    token_hash  text        PRIMARY KEY,
    family_id   text        NOT NULL,
    parent_hash text,
    user_id     text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id) WHERE revoked_at IS NULL;

-- API keys for scripts: vx_<prefix>_<secret>, shown once; only the SHA-256 of the key is kept.
CREATE TABLE api_keys (
    prefix      text        PRIMARY KEY,
    key_hash    text        NOT NULL,
    user_id     text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    scopes      text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

-- Signal webhooks: the HMAC secret is needed to verify, so it is kept, encrypted with
-- AES-256-GCM under a key derived from the JWT key file (valux.auth.webhooks.seal_secret).
CREATE TABLE webhooks (
    id          text        PRIMARY KEY,
    user_id     text        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name        text        NOT NULL,
    secret      bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX webhooks_user ON webhooks (user_id);

-- The audit log (valux.auth.audit.write_audit): logins, failures, lockouts, keys, webhooks,
-- trading-state changes; later wallet unlocks and key exports. Never a secret in detail.
CREATE TABLE audit_log (
    id          bigserial   PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    event       text        NOT NULL,
    user_id     text,                       -- whose account or resource
    actor_id    text,                       -- who did it (NULL: the system, an unknown caller)
    ip          text,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_user ON audit_log (user_id, at DESC);

-- Who owns each agent (and so its wallet, positions, trades and signal outcomes). Written
-- by the API before the agent is created; an agent id stays with its owner even after the
-- agent is deleted, so another user can never reuse it and see its history.
CREATE TABLE agent_owners (
    agent_id    text        PRIMARY KEY,
    owner_id    text        NOT NULL REFERENCES users (id)
);
CREATE INDEX agent_owners_owner ON agent_owners (owner_id);
INSERT INTO agent_owners (agent_id, owner_id) SELECT id, 'u_admin' FROM agents;

-- Signal ids are per user: two users may both send "sig-1" (their agents differ, so their
-- signal_outcomes rows, keyed by signal and agent, never collide).
ALTER TABLE signals ADD COLUMN owner_id text NOT NULL DEFAULT 'u_admin' REFERENCES users (id);
ALTER TABLE signals ALTER COLUMN owner_id DROP DEFAULT;
ALTER TABLE signals DROP CONSTRAINT signals_pkey;
ALTER TABLE signals ADD PRIMARY KEY (owner_id, id);
