-- Every start of a supervised actor process, recorded by the process itself: restart counts
-- that are neither sampled by a supervisor's ping nor lost when a supervisor restarts.
CREATE TABLE actor_starts (
    name         text        NOT NULL,   -- the actor's name in the valux namespace
    incarnation  text        NOT NULL,
    pid          integer     NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, incarnation)
);
CREATE INDEX actor_starts_time ON actor_starts (name, started_at);

-- Each time `valux` starts a new actor system (not when it attaches to a running one).
CREATE TABLE system_boots (
    boot_at      timestamptz PRIMARY KEY DEFAULT now()
);
