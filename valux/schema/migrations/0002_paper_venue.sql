-- The paper venue's own order book: what "the exchange" knows, written by the venue
-- before it answers, in its own transaction (it is not part of any wallet's journal).
-- A wallet that restarts with an intent in flight asks the venue, and the venue answers
-- from here, exactly as a real exchange would answer a status query.
CREATE TABLE paper_venue_orders (
    intent_id    text        PRIMARY KEY,
    state        text        NOT NULL,     -- filled | failed
    base_amount  numeric     NOT NULL,
    quote_amount numeric     NOT NULL,
    price        numeric     NOT NULL,
    fee          numeric     NOT NULL,
    network_fee  numeric     NOT NULL,
    reason       text,
    ts           double precision NOT NULL,
    tx_id        text
);
