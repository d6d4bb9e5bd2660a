-- enqueue.lua: create a job and make it ready (or schedule it).
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
-- KEYS[2] pending list    <prefix>:{<queue>}:pending
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[4] wake list       <prefix>:{<queue>}:wake
--
-- ARGV[1] job id
-- ARGV[2] absolute ready time, Unix ms (0 = now)
-- ARGV[3] delay from Redis's clock, ms (0 = none; wins over ARGV[2])
-- ARGV[4..] field, value pairs stored in the job hash
--
-- Returns {code, now_ms}: code 0 = a job with this id exists (nothing written),
-- 1 = queued, 2 = scheduled.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local at = tonumber(ARGV[2])
local delay = tonumber(ARGV[3])
if delay > 0 then
  at = now + delay
end
local code = 1
local nows = tostring(now)
if at > now then
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'created_at', nows, 'scheduled_at', at, unpack(ARGV, 4))
  redis.call('ZADD', KEYS[3], at, ARGV[1])
  code = 2
else
  redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', nows, 'enqueued_at', nows, unpack(ARGV, 4))
  redis.call('RPUSH', KEYS[2], ARGV[1])
end
-- One token at most: an idle worker wakes, fetches (or recomputes its wait
-- for a scheduled job) and passes the wake-up on while work remains.
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('LPUSH', KEYS[4], '1')
end
return {code, now}
