-- Trading states (ACTIVE / REDUCING / HALTED) per agent and globally, durable signal
-- outcomes (the whole first answer per agent) and the agents a signal was for.
ALTER TABLE agents ADD COLUMN trading_state text NOT NULL DEFAULT 'ACTIVE';
ALTER TABLE agents ADD COLUMN trading_state_reason text;
-- A pause was the reference's ORCH-2 (nothing runs); it is now REDUCING (exits run).
UPDATE agents SET status = 'active', trading_state = 'REDUCING', trading_state_reason = 'paused'
 WHERE status = 'paused';

-- The current state per scope ('global'; users get theirs later). Its history is the
-- journal stream 'risk:<scope>', written in the same transaction.
CREATE TABLE risk_states (
    scope       text        PRIMARY KEY,
    state       text        NOT NULL,
    reason      text,
    source      text,
    updated_at  timestamptz NOT NULL
);

ALTER TABLE signal_outcomes ADD COLUMN detail jsonb;   -- the outcome as first answered
ALTER TABLE signals ADD COLUMN targets text[];         -- agents it was for (NULL: before this)
