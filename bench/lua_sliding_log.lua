-- A sorted-set sliding-log limiter: exact, but O(log n) per call and one
-- member per admission. KEYS[1] = zset key, ARGV[1] = limit, ARGV[2] = window ms.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now, t[1] .. t[2] .. '-' .. used)
redis.call('PEXPIRE', KEYS[1], window)
return 1
