-- limits.lua: set a queue's limits, pause it or resume it (limits.go). The
-- flow hash is what dequeue.lua obeys; a queue without one has no limits
-- and is not paused, and its scripts take their fast path.
--
-- KEYS[1] flow hash       <prefix>:{<queue>}:flow  (concurrency, rate, per_ms,
--         key_concurrency, key_rate, key_per_ms, paused, gen (counts the
--         sets: the keys' rate states of older ones are stale), and
--         dequeue.lua's tat and held)
-- KEYS[2] active zset     <prefix>:{<queue>}:active  (its channel tells the
--         queue's workers to look at it again: "go")
-- KEYS[3] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[4] parked keys     <prefix>:{<queue>}:parkkeys  (limit key -> when to
--         look at its parked jobs again)
-- KEYS[5] pending list    <prefix>:{<queue>}:pending
--
-- ARGV[1] "set", "pause" or "resume"
-- ARGV[2..] with "set": concurrency, rate, per_ms, key_concurrency, key_rate,
--           key_per_ms (0 = none)
--
-- Without key limits, the jobs parked for their keys go back to the head
-- of the queue (all of them, in this one call). With a KeyConcurrency, the
-- running jobs of each limit key (leases not expired) hold a slot of their
-- key from this call on, those started before it too (each running job is
-- read once).
--
-- Returns 1. A key of the wrong type answers an error naming it, and
-- nothing is written.
local err = check(KEYS[1], 'hash', KEYS[2], 'zset', KEYS[3], 'list', KEYS[4], 'zset', KEYS[5], 'list')
if err then
  return err
end
local names = {'concurrency', 'rate', 'per_ms', 'key_concurrency', 'key_rate', 'key_per_ms'}
local op = ARGV[1]
if op == 'set' then
  for i, f in ipairs(names) do
    local v = tonumber(ARGV[i + 1])
    if v > 0 then
      redis.call('HSET', KEYS[1], f, ARGV[i + 1])
    else
      redis.call('HDEL', KEYS[1], f)
    end
  end
  -- The rates count from now: the queue's state goes, and the keys' states
  -- (each tagged with the generation it was written in) no longer count.
  redis.call('HDEL', KEYS[1], 'tat')
  redis.call('HINCRBY', KEYS[1], 'gen', 1)
  if tonumber(ARGV[5]) > 0 then
    -- Jobs leased while the queue had no KeyConcurrency hold no slot yet.
    local base = string.sub(KEYS[1], 1, -5)
    local _, nows = clock()
    for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. nows, '+inf')) do
      local h = redis.pcall('HMGET', base .. 'job:' .. id, 'flags', 'limit_key')
      if type(h) == 'table' and h[1] and h[2] and string.find(h[1], 'k', 1, true) then
        redis.pcall('ZADD', base .. 'slots:' .. h[2], 'NX', nows, id) -- a damaged set is left alone
      end
    end
  end
  local keys = redis.call('ZRANGE', KEYS[4], 0, -1)
  if tonumber(ARGV[5]) == 0 and tonumber(ARGV[6]) == 0 then
    -- No key limits any more: every parked job goes back to the head of
    -- the queue, oldest first, key by key.
    local back = {}
    for _, lk in ipairs(keys) do
      local pk = string.sub(KEYS[1], 1, -5) .. 'park:' .. lk
      local ids = redis.pcall('LRANGE', pk, 0, -1)
      if not failed(ids) then -- a damaged list is left alone
        for _, id in ipairs(ids) do
          back[#back + 1] = id
        end
        redis.call('DEL', pk)
      end
    end
    for b = #back, 1, -1 do
      redis.call('LPUSH', KEYS[5], back[b])
    end
    redis.call('DEL', KEYS[4], string.sub(KEYS[1], 1, -5) .. 'parked')
  else
    -- Parked jobs are looked at again under the new limits.
    for i = 1, #keys, 1000 do
      local args = {}
      for j = i, math.min(i + 999, #keys) do
        args[#args + 1] = 0
        args[#args + 1] = keys[j]
      end
      redis.call('ZADD', KEYS[4], unpack(args))
    end
  end
elseif op == 'pause' then
  redis.call('HSET', KEYS[1], 'paused', '1')
  return 1
elseif op == 'resume' then
  redis.call('HDEL', KEYS[1], 'paused')
else
  return redis.error_reply('rqgo: limits.lua: unknown operation ' .. tostring(op))
end
-- A queue with no limits left, not paused, drops its flow hash: its
-- scripts take their fast path again.
local left = false
for _, f in ipairs(names) do
  if redis.call('HEXISTS', KEYS[1], f) == 1 then
    left = true
  end
end
if not left and redis.call('HEXISTS', KEYS[1], 'paused') == 0 then
  redis.call('DEL', KEYS[1])
end
-- Workers that wait because of a limit or the pause look again.
redis.call('PUBLISH', KEYS[2], 'go')
if redis.call('LLEN', KEYS[5]) > 0 or redis.call('ZCARD', KEYS[4]) > 0 then
  redis.call('DEL', KEYS[3])
  wake(KEYS[3])
end
return 1
