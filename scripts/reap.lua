-- reap.lua: recover jobs whose lease expired, and drop registry entries whose
-- job hash has expired. Runs at most once per lock period per queue, whoever
-- calls it.
--
-- KEYS[1] active zset     <prefix>:{<queue>}:active
-- KEYS[2] pending list    <prefix>:{<queue>}:pending
-- KEYS[3] failed zset     <prefix>:{<queue>}:failed
-- KEYS[4] reaper lock     <prefix>:{<queue>}:reaper
-- KEYS[5] wake list       <prefix>:{<queue>}:wake
-- KEYS[6] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
-- KEYS[7] finished zset   <prefix>:{<queue>}:finished
-- KEYS[8] canceled zset   <prefix>:{<queue>}:canceled
--
-- ARGV[1] lock period, ms
-- ARGV[2] most jobs to look at per registry
-- ARGV[3] failure TTL ms when the job sets none (0 = keep nothing, -1 = forever)
--
-- Returns {requeued, failed, cleaned}, or {-1, 0, 0} when another caller
-- reaped this queue within the lock period.
if not redis.call('SET', KEYS[4], '1', 'NX', 'PX', ARGV[1]) then
  return {-1, 0, 0}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit = tonumber(ARGV[2])
local prefix = KEYS[6]
local requeued, failed, cleaned = 0, 0, 0

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  local k = prefix .. id
  if redis.call('TYPE', k).ok == 'hash' then
    redis.call('HDEL', k, 'token')
    local attempt = tonumber(redis.call('HGET', k, 'attempt')) or 0
    local max = tonumber(redis.call('HGET', k, 'max_retries')) or 0
    if attempt > max then
      local ttl = tonumber(redis.call('HGET', k, 'failure_ttl_ms')) or tonumber(ARGV[3])
      if ttl == 0 then
        redis.call('DEL', k)
      else
        redis.call('HSET', k, 'status', 'failed', 'ended_at', now, 'error', 'lease expired')
        redis.call('ZADD', KEYS[3], now, id)
        if ttl > 0 then
          redis.call('PEXPIRE', k, ttl)
        end
      end
      failed = failed + 1
    else
      redis.call('HSET', k, 'status', 'queued', 'enqueued_at', now, 'error', 'lease expired')
      -- To the front: this job has waited longest.
      redis.call('LPUSH', KEYS[2], id)
      requeued = requeued + 1
    end
  end
end
if requeued > 0 then
  redis.call('LPUSH', KEYS[5], '1')
  redis.call('LTRIM', KEYS[5], 0, 0)
end

-- Registries hold ids in end-time order; the oldest entries expire first.
for _, reg in ipairs({KEYS[7], KEYS[3], KEYS[8]}) do
  for _, id in ipairs(redis.call('ZRANGE', reg, 0, limit - 1)) do
    if redis.call('EXISTS', prefix .. id) == 0 then
      redis.call('ZREM', reg, id)
      cleaned = cleaned + 1
    end
  end
end
return {requeued, failed, cleaned}
