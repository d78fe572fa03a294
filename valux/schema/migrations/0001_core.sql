-- valux core schema: the journal, snapshots and the read models the API queries.
--
-- The journal is the source of truth. Every other table except position_stops is
-- a read model written in the same transaction as the journal events that
-- produced it. position_stops is owned by the stop-loss evaluators (the trailing
-- stop's peak and ratchet, SL-12) and is read back when they re-arm.

CREATE TABLE journal (
    stream_id   text        NOT NULL,          -- 'agent:<id>' or 'wallet:<id>'
    seq         bigint      NOT NULL,          -- 1, 2, 3 ... per stream, no gaps
    event_type  text        NOT NULL,
    payload     bytea       NOT NULL,          -- msgpack
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, seq)               -- a second writer of a stream fails here
);

CREATE TABLE snapshots (
    stream_id   text        PRIMARY KEY,
    seq         bigint      NOT NULL,          -- last journal seq folded into state
    state       bytea       NOT NULL,          -- msgpack
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE SEQUENCE agent_seq START 0 MINVALUE 0;  -- agent number -> host slot = seq / agents_per_host

CREATE TABLE agents (
    id          text        PRIMARY KEY,
    name        text        NOT NULL,
    status      text        NOT NULL,          -- active | paused | quarantined | deleted
    config      jsonb       NOT NULL,
    seq         bigint      NOT NULL,
    host_slot   integer     NOT NULL,
    wallet_id   text        NOT NULL,
    wallet_slot integer     NOT NULL,
    last_error  text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX agents_host_slot ON agents (host_slot) WHERE status <> 'deleted';

CREATE TABLE wallets (
    id          text        PRIMARY KEY,
    agent_id    text        NOT NULL,
    venue       text        NOT NULL,
    host_slot   integer     NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE INDEX wallets_host_slot ON wallets (host_slot);

CREATE TABLE balances (
    wallet_id   text        NOT NULL,
    asset       text        NOT NULL,
    amount      numeric     NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (wallet_id, asset)
);

CREATE TABLE positions (
    id              text        PRIMARY KEY,
    agent_id        text        NOT NULL,
    wallet_id       text        NOT NULL,
    token           text        NOT NULL,
    status          text        NOT NULL,      -- open | closed
    amount          numeric     NOT NULL,      -- tokens bought (purchaseAmount)
    remaining       numeric     NOT NULL,      -- tokens still held
    purchase_price  numeric     NOT NULL,
    invested        numeric     NOT NULL,      -- quote debited, fees included
    proceeds        numeric     NOT NULL DEFAULT 0,
    realized_pnl    numeric,
    exit_reason     text,
    signal_id       text,
    host_slot       integer     NOT NULL,
    exit_rules      jsonb       NOT NULL,      -- what the evaluator arms
    opened_at       timestamptz NOT NULL,
    closed_at       timestamptz
);
CREATE INDEX positions_agent ON positions (agent_id, status);
CREATE INDEX positions_open ON positions (status) WHERE status = 'open';

CREATE TABLE position_stops (
    position_id text        PRIMARY KEY,
    peak        double precision,
    stop_pct    double precision,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE trades (
    intent_id     text        PRIMARY KEY,
    agent_id      text        NOT NULL,
    wallet_id     text        NOT NULL,
    position_id   text,
    side          text        NOT NULL,
    token         text        NOT NULL,
    base_amount   numeric     NOT NULL,
    quote_amount  numeric     NOT NULL,
    price         numeric     NOT NULL,
    fee           numeric     NOT NULL,
    network_fee   numeric     NOT NULL,
    reason        text,
    ts            timestamptz NOT NULL
);
CREATE INDEX trades_agent ON trades (agent_id, ts);

CREATE TABLE signal_outcomes (
    signal_id    text        NOT NULL,
    agent_id     text        NOT NULL,
    status       text        NOT NULL,          -- bought | ineligible | failed
    reason       text,
    position_id  text,
    created_at   timestamptz NOT NULL,
    PRIMARY KEY (signal_id, agent_id)
);

CREATE TABLE signals (
    id          text        PRIMARY KEY,
    body        jsonb       NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
