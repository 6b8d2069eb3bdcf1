-- Every wabot process that serves this database, as it last reported itself: the
-- lease keeper upserts its row every few seconds, so `wabot status` can show who
-- holds which leases, who is alive, and whether sending is on hold (Meta refused
-- the access token: error 190) and why. A row whose `seen_at` is old is a process
-- that stopped; its leases expire on their own. Rows unseen for a day are purged.
CREATE TABLE IF NOT EXISTS public.wabot_processes (
    -- The lease holder name (`p<pid>-<hex>`): the prefix of every lease token it takes.
    holder text PRIMARY KEY,
    pid integer NOT NULL,
    hostname text,
    version text NOT NULL,
    started_at timestamptz NOT NULL,
    seen_at timestamptz NOT NULL DEFAULT now(),
    -- Set by a graceful shutdown once its drain finished (NULL while running, and
    -- for a process that was killed: its `seen_at` stops moving).
    stopped_at timestamptz,
    -- Why sending is on hold (NULL when it is not), and since when.
    send_hold text,
    send_hold_since timestamptz,
    -- Leases held in memory when it last reported.
    turn_leases integer NOT NULL DEFAULT 0,
    send_leases integer NOT NULL DEFAULT 0
);
