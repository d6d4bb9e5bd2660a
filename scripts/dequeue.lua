#!lua flags=allow-oom
-- dequeue.lua: hand up to N ready jobs of one queue to a worker.
--
-- Due scheduled jobs (delayed jobs and retries) are promoted to pending first.
-- Each job handed out is, in the same step, recorded in the active set with
-- a lease deadline and given a fresh attempt token. It runs when Redis is
-- out of memory too (allow-oom), so workers can drain a full Redis.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] active zset     <prefix>:{<queue>}:active     (id -> lease deadline ms;
--         also a channel, told when the set gains its first job)
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled  (id -> ready time ms)
-- KEYS[4] token counter   <prefix>:{<queue>}:seq
-- KEYS[5] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[6] job key prefix  <prefix>:{<queue>}:job:  (job keys are this plus the
--         id, so they share the queue's hash tag and Cluster slot)
--
-- ARGV[1] most jobs to hand out
-- ARGV[2] lease, ms
-- ARGV[3] worker id
-- ARGV[4] the worker's instance nonce: a job's token is "<n>:<nonce>", n from
--         the counter, so a worker can tell the jobs leased to it by a call
--         whose reply it never got, even among workers of the same id
--
-- Returns {next_ms, now_ms, left, active, <job 1>, <job 2>, ...}: next_ms is
-- the earliest remaining scheduled time (0 when none), now_ms the jobs'
-- started_at, left the ready jobs still pending, active the size of the
-- active set. Each job is 19 elements: id, token, attempt (the new ones),
-- then the values (nil when absent) of the hash fields id, queue, func,
-- args, max_retries, timeout_ms, result_ttl_ms, failure_ttl_ms, backoff,
-- created_at, enqueued_at, scheduled_at, ended_at, result, error, parents,
-- in this order. The job's status is `started` and its worker ARGV[3].
--
-- Every key is read, and the counter checked, before the first write: a key
-- of the wrong type answers an error naming it, and no job moves.
local left = redis.pcall('LLEN', KEYS[1])
if failed(left) then
  return bad(KEYS[1], 'list')
end
local active = redis.pcall('ZCARD', KEYS[2])
if failed(active) then
  return bad(KEYS[2], 'zset')
end
local now = now_ms()
local due = redis.pcall('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 1000)
if failed(due) then
  return bad(KEYS[3], 'zset')
end
local seq = redis.pcall('GET', KEYS[4])
if failed(seq) then
  return bad(KEYS[4], 'string')
end
if seq and not (string.match(seq, '^%d+$') and #seq < 16) then
  return redis.error_reply('rqgo: key ' .. KEYS[4] .. ' holds "' .. string.sub(seq, 1, 40) ..
    '", not a token count; nothing was changed: repair or delete the key')
end
local prefix = KEYS[6]
-- Numbers used more than once are turned into strings once: Redis formats
-- every number argument of redis.call anew.
local nows = tostring(now)

for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local k = prefix .. id
  if redis.call('TYPE', k).ok == 'hash' then
    redis.call('HSET', k, 'status', 'queued', 'enqueued_at', nows)
    redis.call('RPUSH', KEYS[1], id)
    left = left + 1
  end
end

local out = {0, now, 0, active}
if left > 0 then
  local ids = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
  left = left - #ids
  local tok = redis.call('INCRBY', KEYS[4], #ids) - #ids
  local deadline = tostring(now + tonumber(ARGV[2]))
  local leased = {}
  local n = 0
  for _, id in ipairs(ids) do
    local k = prefix .. id
    tok = tok + 1
    local token = tok .. ':' .. (ARGV[4] or '')
    -- A key that is not a hash is skipped, as is a job whose hash is gone
    -- (deleted by hand): there is nothing to run.
    local h = redis.pcall('HMGET', k, 'id', 'queue', 'func', 'args', 'max_retries',
      'timeout_ms', 'result_ttl_ms', 'failure_ttl_ms', 'backoff', 'created_at',
      'enqueued_at', 'scheduled_at', 'ended_at', 'result', 'error', 'attempt', 'flags')
    local found = false
    if not failed(h) then
      for f = 1, 17 do
        if h[f] then
          found = true
          break
        end
      end
      found = found or redis.call('EXISTS', k) == 1
    end
    local fl = found and h[17] ~= '' and h[17] -- '' for a plain job
    local startBy = nil
    if fl and string.find(fl, 's', 1, true) then
      local within = tonumber(redis.call('HGET', k, 'start_within_ms'))
      startBy = within and (tonumber(h[10]) or 0) + within
    end
    if startBy and now > startBy then
      -- It missed its window (StartWithin): canceled, not started.
      found = false
      local d, w, u, uf, c = extras(k, fl)
      local ttl = tonumber(h[8]) or 604800000 -- DefaultFailureTTL
      local base = string.sub(prefix, 1, -5)
      if ttl == 0 then
        redis.call('DEL', k)
      else
        redis.call('HSET', k, 'status', 'canceled', 'ended_at', nows,
          'error', 'expired: not started by ' .. startBy .. ' (Unix ms), ' .. (startBy - (tonumber(h[10]) or 0)) ..
          ' ms after it was enqueued (StartWithin)')
        redis.pcall('ZADD', base .. 'canceled', now, id)
        if ttl > 0 then
          redis.call('PEXPIRE', k, ttl)
        end
      end
      ended(base, id, 'canceled', d, w, now, nil, u, uf, c)
    elseif fl and string.find(fl, 'S', 1, true) then
      -- Unique until started: the key is free once an attempt starts.
      local x = redis.call('HMGET', k, 'unique_key', 'unique_for_ms', 'created_at')
      if x[1] then
        unhold(string.sub(prefix, 1, -5), id, x[1], x[2], x[3], now)
      end
    end
    if found then
      local attempt = (tonumber(h[16]) or 0) + 1
      redis.call('HSET', k, 'attempt', attempt, 'status', 'started', 'started_at', nows, 'worker', ARGV[3], 'token', token)
      leased[#leased + 1] = deadline
      leased[#leased + 1] = id
      n = n + 1
      if #leased >= 1000 then
        redis.call('ZADD', KEYS[2], unpack(leased))
        leased = {}
      end
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = attempt
      for f = 1, 15 do
        out[#out + 1] = h[f]
      end
      -- A job's parents, for its handler ([Job.FetchParents]).
      out[#out + 1] = fl and string.find(fl, 'p', 1, true) and redis.call('HGET', k, 'parents') or false
    end
  end
  if #leased > 0 then
    redis.call('ZADD', KEYS[2], unpack(leased))
  end
  if active == 0 and n > 0 then
    -- Idle workers reap a queue only while it has leases: tell them.
    redis.call('PUBLISH', KEYS[2], '1')
  end
  out[4] = active + n
end
out[3] = left
if left > 0 then
  -- Pass the wake-up on while work remains (one token at most).
  wake(KEYS[5])
else
  -- Nothing left: the next job enqueued must wake the workers again.
  redis.call('DEL', KEYS[5])
end

local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
if nxt[2] then
  out[1] = tonumber(nxt[2])
end
return out
