-- The paper exchange's accounts (one per wallet), kept by the exchange itself: what the
-- venue says a wallet holds, independent of the wallet's own journal, as a real venue
-- would. Every movement (deposit, fill) is a row, written in the same transaction as the
-- order outcome that caused it; the account is their sum.
CREATE TABLE paper_accounts (
    account  text    NOT NULL,
    asset    text    NOT NULL,
    amount   numeric NOT NULL,
    PRIMARY KEY (account, asset)
);

CREATE TABLE paper_account_movements (
    ref      text        NOT NULL,     -- intent id of the fill, or the deposit's id
    account  text        NOT NULL,
    asset    text        NOT NULL,
    delta    numeric     NOT NULL,
    kind     text        NOT NULL,     -- deposit | fill
    at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (ref, account, asset)
);

-- Wallets that existed before the exchange kept accounts: their account starts at what
-- their books say (balances read model), so the venue and the wallet agree from here on.
INSERT INTO paper_account_movements (ref, account, asset, delta, kind)
SELECT 'opening:' || wallet_id, wallet_id, asset, amount, 'deposit'
FROM balances WHERE amount <> 0;
INSERT INTO paper_accounts (account, asset, amount)
SELECT wallet_id, asset, amount FROM balances WHERE amount <> 0;
