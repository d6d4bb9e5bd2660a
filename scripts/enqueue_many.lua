#!lua
-- enqueue_many.lua: create a batch of jobs of one queue and make each ready
-- (or schedule it), as enqueue.lua does for one.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[3] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[4] job key prefix  <prefix>:{<queue>}:job:  (job keys are this plus the
--         id, so they share the queue's hash tag and Cluster slot)
-- KEYS[5] active zset     <prefix>:{<queue>}:active
-- KEYS[6] finished zset   <prefix>:{<queue>}:finished
-- KEYS[7] failed zset     <prefix>:{<queue>}:failed
-- KEYS[8] canceled zset   <prefix>:{<queue>}:canceled
--
-- ARGV[1] queue name (the job hashes' `queue` field)
-- ARGV[2..] one group per job, one after the other:
--   job id (also the hash's `id` field)
--   absolute ready time, Unix ms (0 = now)
--   delay from Redis's clock, ms (0 = none; wins over the ready time)
--   '1' when rqgo made the id up (see enqueue.lua's ARGV[4]), else '0'
--   N, the number of arguments that follow in this group
--   N arguments: field, value pairs stored in the job hash, besides id,
--   queue, attempt (0), status and the times, which the script sets
--
-- Returns {now_ms, code1, code2, ...}, one code per job in order: 0 = a job
-- with this id exists (nothing written for it; a later duplicate of an id
-- in the same batch gets 0 too), 1 = queued, 2 = scheduled.
local err = check(KEYS[1], 'list', KEYS[2], 'zset')
if err then
  return err
end
local chosen = false
local i = 2
while i <= #ARGV do
  if ARGV[i + 3] ~= '1' then
    chosen = true
  end
  i = i + 5 + tonumber(ARGV[i + 4])
end
if chosen then
  err = check(KEYS[5], 'zset', KEYS[6], 'zset', KEYS[7], 'zset', KEYS[8], 'zset')
  if err then
    return err
  end
end
local now, nows = clock()
local out = {now}
local ready = {}
local created = false
i = 2
while i <= #ARGV do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 4])
  local k = KEYS[4] .. id
  local code = 0
  local own = ARGV[i + 3] == '1'
  if redis.call('EXISTS', k) == 0 then
    if not own then
      -- As in enqueue.lua: entries of an expired job with this id go.
      for s = 5, 8 do
        redis.call('ZREM', KEYS[s], id)
      end
      redis.call('ZREM', KEYS[2], id)
    end
    local at, delay = 0, 0
    if ARGV[i + 1] ~= '0' or ARGV[i + 2] ~= '0' then -- read only when set
      at, delay = tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    end
    if delay > 0 then
      at = now + delay
    end
    if at > now then
      redis.call('HSET', k, 'id', id, 'queue', ARGV[1], 'attempt', '0',
        'status', 'scheduled', 'created_at', nows, 'scheduled_at', at, unpack(ARGV, i + 5, i + 4 + n))
      redis.call('ZADD', KEYS[2], at, id)
      code = 2
      created = true
    else
      redis.call('HSET', k, 'id', id, 'queue', ARGV[1], 'attempt', '0',
        'status', 'queued', 'created_at', nows, 'enqueued_at', nows, unpack(ARGV, i + 5, i + 4 + n))
      ready[#ready + 1] = id
      if #ready >= 1000 then
        redis.call('RPUSH', KEYS[1], unpack(ready))
        ready = {}
      end
      code = 1
      created = true
    end
  elseif own then
    -- This call's own job, from a first send whose reply was lost.
    code = redis.call('HGET', k, 'status') == 'scheduled' and 2 or 1
  end
  out[#out + 1] = code
  i = i + 5 + n
end
if #ready > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ready))
end
if created then
  wake(KEYS[3])
end
return out
