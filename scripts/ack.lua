-- ack.lua: record a successful attempt.
--
-- KEYS[1] job hash       <prefix>:{<queue>}:job:<id>
-- KEYS[2] active zset    <prefix>:{<queue>}:active
-- KEYS[3] finished zset  <prefix>:{<queue>}:finished  (id -> end time ms)
--
-- ARGV[1] job id
-- ARGV[2] attempt token the worker was given
-- ARGV[3] result, JSON
-- ARGV[4] result TTL ms when the job sets none (0 = keep nothing, -1 = forever)
--
-- Returns 1, or 0 when the token is stale (the lease was lost and the job
-- belongs to another attempt now): nothing is written then.
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
local ttl = tonumber(redis.call('HGET', KEYS[1], 'result_ttl_ms')) or tonumber(ARGV[4])
if ttl == 0 then
  redis.call('DEL', KEYS[1])
  return 1
end
redis.call('HDEL', KEYS[1], 'token')
redis.call('HSET', KEYS[1], 'status', 'finished', 'ended_at', now, 'result', ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[1])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
else
  redis.call('PERSIST', KEYS[1])
end
return 1
