-- Every order intent a wallet has accepted, and how it ended: the durable half of
-- "a wallet never executes or books again an intent it has finished, however old".
-- Written in the same transaction as the wallet's journal events (a read model);
-- a wallet keeps only its recent intents in memory and asks this table for older ones.
CREATE TABLE wallet_intents (
    intent_id    text        PRIMARY KEY,
    wallet_id    text        NOT NULL,
    side         text        NOT NULL,
    token        text        NOT NULL,
    state        text        NOT NULL,     -- pending | filled | failed | voided
    base_amount  numeric     NOT NULL DEFAULT 0,
    quote_amount numeric     NOT NULL DEFAULT 0,
    price        numeric     NOT NULL DEFAULT 0,
    fee          numeric     NOT NULL DEFAULT 0,
    network_fee  numeric     NOT NULL DEFAULT 0,
    reason       text,
    ts           double precision NOT NULL DEFAULT 0,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_intents_wallet ON wallet_intents (wallet_id, state);

-- Filled intents from before this table existed: their trades say how they ended.
INSERT INTO wallet_intents (intent_id, wallet_id, side, token, state, base_amount,
                            quote_amount, price, fee, network_fee, ts)
SELECT intent_id, wallet_id, side, token, 'filled', base_amount, quote_amount, price, fee,
       network_fee, extract(epoch FROM ts)
FROM trades
ON CONFLICT (intent_id) DO NOTHING;
