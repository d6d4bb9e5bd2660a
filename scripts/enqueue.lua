#!lua
-- enqueue.lua: create a job and make it ready (or schedule it).
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
-- KEYS[2] pending list    <prefix>:{<queue>}:pending
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[4] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[5..8], only with ARGV[4] = '0':
-- KEYS[5] active zset     <prefix>:{<queue>}:active
-- KEYS[6] finished zset   <prefix>:{<queue>}:finished
-- KEYS[7] failed zset     <prefix>:{<queue>}:failed
-- KEYS[8] canceled zset   <prefix>:{<queue>}:canceled
--
-- ARGV[1] job id
-- ARGV[2] absolute ready time, Unix ms (0 = now)
-- ARGV[3] delay from Redis's clock, ms (0 = none; wins over ARGV[2])
-- ARGV[4] '1' when rqgo made the id up for this call: a job with it can only
--         be this call's own, written by a first send whose reply was lost;
--         '0' for an id the caller chose
-- ARGV[5..] field, value pairs stored in the job hash
--
-- Returns {code, now_ms}: code 0 = a job with this id exists (nothing written),
-- 1 = queued, 2 = scheduled.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
    return bad(KEYS[1], 'hash')
  end
  if ARGV[4] == '1' then
    local h = redis.call('HMGET', KEYS[1], 'status', 'created_at')
    if h[1] == 'scheduled' then
      return {2, tonumber(h[2]) or 0}
    end
    return {1, tonumber(h[2]) or 0}
  end
  return {0, 0}
end
local now, nows = clock()
local at, delay = 0, 0
if ARGV[2] ~= '0' or ARGV[3] ~= '0' then -- read only when set
  at, delay = tonumber(ARGV[2]), tonumber(ARGV[3])
end
if delay > 0 then
  at = now + delay
end
local id = ARGV[1]
if ARGV[4] ~= '1' then
  -- An id the caller chose may have been used by a job that expired since:
  -- its entries in the sets would otherwise apply to this job. They are read
  -- first, so a set of the wrong type fails here before anything is written.
  local stale = {}
  for i = 3, 8 do
    if i ~= 4 then
      local r = redis.pcall('ZSCORE', KEYS[i], id)
      if failed(r) then
        return bad(KEYS[i], 'zset')
      elseif r then
        stale[#stale + 1] = KEYS[i]
      end
    end
  end
  for _, k in ipairs(stale) do
    redis.call('ZREM', k, id)
  end
end
-- The list or set first: a key of the wrong type fails the call before the
-- hash is written. (A failed write of a script changes nothing, so these
-- cost no check of their own.)
local code = 1
if at > now then
  local r = redis.pcall('ZADD', KEYS[3], at, id)
  if failed(r) then
    return bad(KEYS[3], 'zset', r)
  end
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'created_at', nows, 'scheduled_at', at, unpack(ARGV, 5))
  code = 2
else
  local r = redis.pcall('RPUSH', KEYS[2], id)
  if failed(r) then
    return bad(KEYS[2], 'list', r)
  end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', nows, 'enqueued_at', nows, unpack(ARGV, 5))
end
wake(KEYS[4])
return {code, now}
