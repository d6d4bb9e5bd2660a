-- enqueue_many.lua: create a batch of jobs of one queue and make each ready
-- (or schedule it), as enqueue.lua does for one.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[3] wake list       <prefix>:{<queue>}:wake
-- KEYS[4] job key prefix  <prefix>:{<queue>}:job:  (job keys are this plus the
--         id, so they share the queue's hash tag and Cluster slot)
--
-- ARGV[1] queue name (the job hashes' `queue` field)
-- ARGV[2..] one group per job, one after the other:
--   job id (also the hash's `id` field)
--   absolute ready time, Unix ms (0 = now)
--   delay from Redis's clock, ms (0 = none; wins over the ready time)
--   N, the number of arguments that follow in this group
--   N arguments: field, value pairs stored in the job hash, besides id,
--   queue, attempt (0), status and the times, which the script sets
--
-- Returns {now_ms, code1, code2, ...}, one code per job in order: 0 = a job
-- with this id exists (nothing written for it; a later duplicate of an id
-- in the same batch gets 0 too), 1 = queued, 2 = scheduled.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {now}
-- Numbers are turned into strings once: Redis formats every number argument
-- of redis.call anew, which was a quarter of this script's time.
local nows = tostring(now)
local ready = {}
local created = false
local i = 2
while i <= #ARGV do
  local id = ARGV[i]
  local n = tonumber(ARGV[i + 3])
  local k = KEYS[4] .. id
  local code = 0
  if redis.call('EXISTS', k) == 0 then
    local at = tonumber(ARGV[i + 1])
    local delay = tonumber(ARGV[i + 2])
    if delay > 0 then
      at = now + delay
    end
    if at > now then
      redis.call('HSET', k, 'id', id, 'queue', ARGV[1], 'attempt', '0',
        'status', 'scheduled', 'created_at', nows, 'scheduled_at', at, unpack(ARGV, i + 4, i + 3 + n))
      redis.call('ZADD', KEYS[2], at, id)
      code = 2
      created = true
    else
      redis.call('HSET', k, 'id', id, 'queue', ARGV[1], 'attempt', '0',
        'status', 'queued', 'created_at', nows, 'enqueued_at', nows, unpack(ARGV, i + 4, i + 3 + n))
      ready[#ready + 1] = id
      if #ready >= 1000 then
        redis.call('RPUSH', KEYS[1], unpack(ready))
        ready = {}
      end
      code = 1
      created = true
    end
  end
  out[#out + 1] = code
  i = i + 4 + n
end
if #ready > 0 then
  redis.call('RPUSH', KEYS[1], unpack(ready))
end
-- One token at most: an idle worker wakes, fetches (or recomputes its wait
-- for a scheduled job) and passes the wake-up on while work remains.
if created and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('LPUSH', KEYS[3], '1')
end
return out
