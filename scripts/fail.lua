#!lua flags=allow-oom
-- fail.lua: record a failed attempt; schedule the retry or fail the job. It
-- runs when Redis is out of memory too (allow-oom), so a full Redis still
-- settles the attempts it handed out.
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
-- KEYS[2] active zset     <prefix>:{<queue>}:active
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[4] failed zset     <prefix>:{<queue>}:failed  (id -> end time ms)
-- KEYS[5] pending list    <prefix>:{<queue>}:pending
-- KEYS[6] wake list       <prefix>:{<queue>}:wake  (also a channel)
--
-- ARGV[1] job id
-- ARGV[2] attempt token the worker was given
-- ARGV[3] error text
-- ARGV[4] retry delay ms (0 = retry now, -1 = no retry: the job fails)
-- ARGV[5] failure TTL ms when the job sets none (0 = keep nothing, -1 = forever)
-- ARGV[6] '1' when the handler snoozed the job ([Snooze]): the retry does not
--         count the attempt
--
-- Returns 0 when the token is stale (nothing written), 1 when a retry is
-- queued or scheduled, 2 when the job failed, 4 when it was canceled
-- instead (a cancel was asked while it ran: see cancel.lua); 3 and 5 are 2
-- and 4 when its end is owed to dependents in other queues (see ended in
-- prelude.lua). A key of the wrong type answers
-- an error naming it, and nothing is written.
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'zset', KEYS[4], 'zset', KEYS[5], 'list')
if err then
  return err
end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
local delay = tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'failure_ttl_ms', 'flags')
if h[2] == '' then
  h[2] = false -- a plain job
end
-- A cancel was asked while it ran (cancel.lua): it ends canceled, no retry.
local canceled = h[2] and string.find(h[2], 'c', 1, true)
if canceled then
  delay = -1
end
local base = string.sub(KEYS[1], 1, -5 - #ARGV[1])
if delay < 0 and h[2] and (string.find(h[2], 'd', 1, true) or canceled) then
  err = check_deps(base)
  if err then
    return err
  end
end
local now = now_ms()
redis.call('ZREM', KEYS[2], ARGV[1])
redis.pcall('ZREM', base .. 'ahead', ARGV[1]) -- a job held ahead (dequeue.lua)
redis.call('HDEL', KEYS[1], 'token')
if h[2] then
  unslot_job(base, KEYS[1], ARGV[1], h[2])
end
freed(base)
if ARGV[6] == '1' then
  -- Snoozed: the attempt does not count.
  redis.call('HINCRBY', KEYS[1], 'attempt', -1)
end
if delay == 0 then
  redis.call('HSET', KEYS[1], 'status', 'queued', 'enqueued_at', now, 'error', ARGV[3])
  redis.call('RPUSH', KEYS[5], ARGV[1])
  wake(KEYS[6])
  return 1
elseif delay > 0 then
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'scheduled_at', now + delay, 'error', ARGV[3])
  redis.call('ZADD', KEYS[3], now + delay, ARGV[1])
  wake(KEYS[6])
  return 1
end
local ttl = tonumber(h[1]) or tonumber(ARGV[5])
local d, w, u, uf, c = extras(KEYS[1], h[2])
local st, reg, why = 'failed', KEYS[4], ARGV[3]
if canceled then
  st, reg, why = 'canceled', base .. 'canceled', 'canceled while running: ' .. ARGV[3]
end
if ttl == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'status', st, 'ended_at', now, 'error', why)
  redis.call('ZADD', reg, now, ARGV[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
local code = 2
if canceled then
  code = 4
end
if h[2] and ended(base, ARGV[1], st, d, w, now, nil, u, uf, c) then
  return code + 1
end
return code
