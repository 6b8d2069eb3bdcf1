ALTER TABLE public.wabot_processes DROP COLUMN IF EXISTS send_hold_kind;
