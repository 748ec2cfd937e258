-- The fixed-window limiter most clients use today (INCR + PEXPIRE).
-- KEYS[1] = counter key, ARGV[1] = limit, ARGV[2] = window in ms.
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if n > tonumber(ARGV[1]) then return 0 end
return 1
