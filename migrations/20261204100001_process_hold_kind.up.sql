-- What kind of hold `send_hold` describes, so that `wabot status` tells a rejected
-- token (nothing is tried until the token changes) from an unreachable Graph API
-- (calls are tried and retried) without reading the prose of the reason:
-- 'token_rejected' or 'graph_unreachable'; NULL when nothing is held.
ALTER TABLE public.wabot_processes ADD COLUMN IF NOT EXISTS send_hold_kind text;
