-- dequeue.lua: hand up to N ready jobs of one queue to a worker.
--
-- Due scheduled jobs (delayed jobs and retries) are promoted to pending first.
-- Each job handed out is, in the same step, recorded in the active set with
-- a lease deadline and given a fresh attempt token.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] active zset     <prefix>:{<queue>}:active     (id -> lease deadline ms)
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled  (id -> ready time ms)
-- KEYS[4] token counter   <prefix>:{<queue>}:seq
-- KEYS[5] wake list       <prefix>:{<queue>}:wake
-- KEYS[6] job key prefix  <prefix>:{<queue>}:job:  (job keys are this plus the
--         id, so they share the queue's hash tag and Cluster slot)
--
-- ARGV[1] most jobs to hand out
-- ARGV[2] lease, ms
-- ARGV[3] worker id
--
-- Returns {next_ms, now_ms, <job 1>, <job 2>, ...}: next_ms is the earliest
-- remaining scheduled time (0 when none), now_ms the jobs' started_at. Each
-- job is 18 elements: id, token, attempt (the new ones), then the values
-- (nil when absent) of the hash fields id, queue, func, args, max_retries,
-- timeout_ms, result_ttl_ms, failure_ttl_ms, backoff, created_at,
-- enqueued_at, scheduled_at, ended_at, result, error, in this order. The
-- job's status is `started` and its worker ARGV[3].
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local prefix = KEYS[6]
-- Numbers used more than once are turned into strings once: Redis formats
-- every number argument of redis.call anew.
local nows = tostring(now)

local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local k = prefix .. id
  if redis.call('TYPE', k).ok == 'hash' then
    redis.call('HSET', k, 'status', 'queued', 'enqueued_at', nows)
    redis.call('RPUSH', KEYS[1], id)
  end
end

local out = {0, now}
local ids = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if ids then
  local tok = redis.call('INCRBY', KEYS[4], #ids) - #ids
  local deadline = tostring(now + tonumber(ARGV[2]))
  local active = {}
  for _, id in ipairs(ids) do
    local k = prefix .. id
    tok = tok + 1
    -- Nothing below may raise an error on a damaged key: Redis does not
    -- roll a script back, and the ids are already popped. A key that is
    -- not a hash is skipped, as is a job whose hash is gone (deleted by
    -- hand): there is nothing to run.
    local h = redis.pcall('HMGET', k, 'id', 'queue', 'func', 'args', 'max_retries',
      'timeout_ms', 'result_ttl_ms', 'failure_ttl_ms', 'backoff', 'created_at',
      'enqueued_at', 'scheduled_at', 'ended_at', 'result', 'error', 'attempt')
    local found = false
    if type(h) == 'table' and not h.err then
      for f = 1, 16 do
        if h[f] then
          found = true
          break
        end
      end
      found = found or redis.call('EXISTS', k) == 1
    end
    if found then
      local attempt = (tonumber(h[16]) or 0) + 1
      redis.call('HSET', k, 'attempt', attempt, 'status', 'started', 'started_at', nows, 'worker', ARGV[3], 'token', tok)
      active[#active + 1] = deadline
      active[#active + 1] = id
      if #active >= 1000 then
        redis.call('ZADD', KEYS[2], unpack(active))
        active = {}
      end
      out[#out + 1] = id
      out[#out + 1] = tok
      out[#out + 1] = attempt
      for f = 1, 15 do
        out[#out + 1] = h[f]
      end
    end
  end
  if #active > 0 then
    redis.call('ZADD', KEYS[2], unpack(active))
  end
  -- Pass the wake-up on while work remains (one token at most).
  if redis.call('LLEN', KEYS[1]) > 0 and redis.call('EXISTS', KEYS[5]) == 0 then
    redis.call('LPUSH', KEYS[5], '1')
  end
end

local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then
  out[1] = tonumber(nxt[2])
end
return out
