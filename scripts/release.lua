#!lua flags=allow-oom
-- release.lua: give a running job back to the queue at once (graceful
-- shutdown past its grace period). The interrupted attempt is not counted.
-- It runs when Redis is out of memory too (allow-oom).
--
-- KEYS[1] job hash      <prefix>:{<queue>}:job:<id>
-- KEYS[2] active zset   <prefix>:{<queue>}:active
-- KEYS[3] pending list  <prefix>:{<queue>}:pending
-- KEYS[4] wake list     <prefix>:{<queue>}:wake  (also a channel)
--
-- ARGV[1] job id
-- ARGV[2] attempt token the worker was given
--
-- Returns 1, or 0 when the token is stale (nothing written). A key of the
-- wrong type answers an error naming it, and nothing is written.
local err = check(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'list')
if err then
  return err
end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
local attempt = math.max((tonumber(redis.call('HGET', KEYS[1], 'attempt')) or 1) - 1, 0)
redis.call('HDEL', KEYS[1], 'token')
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', now, 'attempt', attempt)
redis.call('LPUSH', KEYS[3], ARGV[1])
local base = string.sub(KEYS[1], 1, -5 - #ARGV[1])
unslot_job(base, KEYS[1], ARGV[1], redis.call('HGET', KEYS[1], 'flags'))
freed(base)
wake(KEYS[4])
return 1
