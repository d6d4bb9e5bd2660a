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
-- A job whose cancel was asked while it ran (cancel.lua) is canceled
-- instead, and its end passed on as ended does; its dependents in other
-- queues are then left to a reaper's delivery.
--
-- Returns 1, or 0 when the token is stale (nothing written). A key of the
-- wrong type answers an error naming it, and nothing is written.
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'list')
if err then
  return err
end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local base = string.sub(KEYS[1], 1, -5 - #ARGV[1])
local h = redis.call('HMGET', KEYS[1], 'flags', 'failure_ttl_ms')
local canceled = h[1] and string.find(h[1], 'c', 1, true)
if canceled then
  err = check_deps(base)
  if err then
    return err
  end
end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
redis.pcall('ZREM', base .. 'ahead', ARGV[1]) -- a job held ahead (dequeue.lua)
redis.call('HDEL', KEYS[1], 'token')
unslot_job(base, KEYS[1], ARGV[1], h[1])
freed(base)
if canceled then
  local d, w, u, uf, c = extras(KEYS[1], h[1])
  local ttl = tonumber(h[2]) or 604800000 -- DefaultFailureTTL
  if ttl == 0 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', now, 'error', 'canceled while running: the worker stopped')
    redis.call('ZADD', base .. 'canceled', now, ARGV[1])
    if ttl > 0 then
      redis.call('PEXPIRE', KEYS[1], ttl)
    end
  end
  ended(base, ARGV[1], 'canceled', d, w, now, nil, u, uf, c)
  return 1
end
local attempt = math.max((tonumber(redis.call('HGET', KEYS[1], 'attempt')) or 1) - 1, 0)
redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', now, 'attempt', attempt)
redis.call('LPUSH', KEYS[3], ARGV[1])
wake(KEYS[4])
return 1
