#!lua flags=allow-oom
-- reap.lua: recover jobs whose lease expired, and drop registry entries whose
-- job has expired or is no longer in that state. Runs at most once per lock
-- period per queue, whoever calls it. It runs when Redis is out of memory
-- too (allow-oom): it frees memory, and a full Redis must still recover the
-- jobs of dead workers.
--
-- KEYS[1] active zset     <prefix>:{<queue>}:active
-- KEYS[2] pending list    <prefix>:{<queue>}:pending
-- KEYS[3] failed zset     <prefix>:{<queue>}:failed
-- KEYS[4] reaper lock     <prefix>:{<queue>}:reaper
-- KEYS[5] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[6] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
-- KEYS[7] finished zset   <prefix>:{<queue>}:finished
-- KEYS[8] canceled zset   <prefix>:{<queue>}:canceled
-- KEYS[9] cursor hash     <prefix>:{<queue>}:reaped  (per registry: the rank
--         where the next look at it starts)
-- KEYS[10] outbox zset    <prefix>:{<queue>}:outbox  (see owe in prelude.lua)
-- KEYS[11] deferred zset  <prefix>:{<queue>}:deferred  (see defer.lua)
--
-- ARGV[1] lock period, ms
-- ARGV[2] most jobs to look at per registry
-- ARGV[3] failure TTL ms when the job sets none (0 = keep nothing, -1 = forever)
--
-- ARGV[4] ms a deferred job waits for its next check once this pass hands
--         it to the caller
--
-- Returns {requeued, failed, cleaned, active, registered, next, owed, due}:
-- active is the size of the active set and registered the size of the
-- three registries afterwards; requeued is -1 when another caller reaped
-- this queue within the lock period (then only active is counted, and
-- next is when the lock frees while workflows owe work here). The
-- rest is for the caller to finish the work of workflows: owed is the
-- outbox's due entries, as triples of parent id, dependent and the
-- parent's end, for deliver.lua and delivered.lua; due is the deferred jobs
-- whose links are due for a check, each as {id, open parent...}, for
-- link.lua; next is in how many ms the next entry of either is due (-1 =
-- none; 0 when parked jobs of a queue without a flow hash remain). Both
-- are handed out again 5 s (owed) or ARGV[4] ms (due) later when the
-- caller does not finish them.
--
-- Each pass looks at the next ARGV[2] entries of each registry after where
-- the last pass stopped, wrapping around, so jobs kept forever at the head
-- of a registry never hide the expired ones behind them.
lazy() -- the helpers defined on demand (prelude.lua)
local lock = redis.call('TYPE', KEYS[4]).ok
if lock == 'string' then
  local active = redis.pcall('ZCARD', KEYS[1])
  if failed(active) then
    return bad(KEYS[1], 'zset')
  end
  -- While workflows owe work here, come back once the lock is free: the
  -- caller that holds it may die before it finishes that work.
  local nxt = -1
  local owing = redis.pcall('ZCARD', KEYS[10])
  local waiting = redis.pcall('ZCARD', KEYS[11])
  if (not failed(owing) and owing > 0) or (not failed(waiting) and waiting > 0) then
    nxt = math.max(redis.call('PTTL', KEYS[4]), 0)
  end
  return {-1, 0, 0, active, 0, nxt, {}, {}}
elseif lock ~= 'none' then
  return bad(KEYS[4], 'string')
end
local base = string.sub(KEYS[6], 1, -5)
local err = check(KEYS[1], 'zset', KEYS[2], 'list', KEYS[3], 'zset', KEYS[7], 'zset', KEYS[8], 'zset', KEYS[9], 'hash')
  or check_deps(base)
if err then
  return err
end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[1])
local now = now_ms()
local limit = tonumber(ARGV[2])
local prefix = KEYS[6]
local requeued, failedn, cleaned = 0, 0, 0
local fresh = false -- this pass owes deliveries to other queues

local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit)
-- Jobs handed out ahead (dequeue.lua) whose time ahead is over count as
-- holding a slot; their entries go.
local over = redis.pcall('ZRANGEBYSCORE', base .. 'ahead', '-inf', now, 'LIMIT', 0, limit)
if type(over) == 'table' and #over > 0 then
  redis.call('ZREM', base .. 'ahead', unpack(over))
end
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[1], id)
  redis.pcall('ZREM', base .. 'ahead', id)
  local k = prefix .. id
  if redis.call('TYPE', k).ok == 'hash' then
    redis.call('HDEL', k, 'token')
    local h = redis.call('HMGET', k, 'attempt', 'max_retries', 'failure_ttl_ms', 'flags')
    if h[4] == '' then
      h[4] = false -- a plain job
    end
    local attempt = tonumber(h[1]) or 0
    local max = tonumber(h[2]) or 0
    if h[4] then
      unslot_job(base, k, id, h[4])
    end
    -- A cancel asked while it ran (cancel.lua) ends it canceled.
    local canceled = h[4] and string.find(h[4], 'c', 1, true)
    if attempt > max or canceled then
      local ttl = tonumber(h[3]) or tonumber(ARGV[3])
      local d, w, u, uf, c = extras(k, h[4])
      local st, reg, why = 'failed', KEYS[3], 'lease expired'
      if canceled then
        st, reg, why = 'canceled', KEYS[8], 'canceled while running: lease expired'
      end
      if ttl == 0 then
        redis.call('DEL', k)
      else
        redis.call('HSET', k, 'status', st, 'ended_at', now, 'error', why)
        redis.call('ZADD', reg, now, id)
        if ttl > 0 then
          redis.call('PEXPIRE', k, ttl)
        end
      end
      if h[4] and ended(base, id, st, d, w, now, nil, u, uf, c) then
        fresh = true
      end
      failedn = failedn + 1
    else
      redis.call('HSET', k, 'status', 'queued', 'enqueued_at', now, 'error', 'lease expired')
      -- To the front: this job has waited longest.
      redis.call('LPUSH', KEYS[2], id)
      requeued = requeued + 1
    end
  end
end
-- A queue whose flow hash is gone with jobs still parked (deleted by hand:
-- limits.lua sends parked jobs back before it drops the hash) has no key
-- limits, and no fetch looks at its parked jobs any more: they go back to
-- the head of the queue, as when SetLimits drops key limits, up to 100
-- keys a pass. A damaged park list is left alone.
local unparked, more_parked = 0, false
if redis.call('EXISTS', base .. 'flow') == 0 then
  local lks = redis.pcall('ZRANGE', base .. 'parkkeys', 0, 99)
  if not failed(lks) then
    local back = {}
    for _, lk in ipairs(lks) do
      local pk = base .. 'park:' .. lk
      local ids = redis.pcall('LRANGE', pk, 0, -1)
      if not failed(ids) then
        for _, id in ipairs(ids) do
          back[#back + 1] = id
          redis.pcall('ZREM', base .. 'parked', id)
        end
        redis.call('DEL', pk)
        redis.call('ZREM', base .. 'parkkeys', lk)
      end
    end
    for b = #back, 1, -1 do
      redis.call('LPUSH', KEYS[2], back[b])
    end
    unparked = #back
    more_parked = #lks == 100
  end
end
if requeued > 0 or unparked > 0 then
  wake(KEYS[5])
end
if #expired > 0 then
  freed(base)
end

-- An entry stays while its job exists in the registry's state: an expired
-- job leaves, and so does one whose id a new job took.
local registered = 0
for _, r in ipairs({{KEYS[7], 'finished'}, {KEYS[3], 'failed'}, {KEYS[8], 'canceled'}}) do
  local reg, state = r[1], r[2]
  local from = tonumber(redis.call('HGET', KEYS[9], state)) or 0
  local ids = redis.call('ZRANGE', reg, from, from + limit - 1)
  if #ids == 0 and from > 0 then
    from = 0
    ids = redis.call('ZRANGE', reg, 0, limit - 1)
  end
  local kept = 0
  for _, id in ipairs(ids) do
    local st = redis.pcall('HGET', prefix .. id, 'status')
    if st == state then
      kept = kept + 1
    else
      redis.call('ZREM', reg, id)
      cleaned = cleaned + 1
    end
  end
  local nextFrom = from + kept
  if #ids < limit then
    nextFrom = 0
  end
  redis.call('HSET', KEYS[9], state, nextFrom)
  registered = registered + redis.call('ZCARD', reg)
end

-- What workflows still owe: deliveries a dead caller left, and deferred jobs
-- whose links are due for a check (those this pass owes included). Each is
-- handed out with a new due time.
local owed = {}
local upto = now
if fresh then
  upto = now + 5000
end
for _, pid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', upto, 'LIMIT', 0, limit)) do
  local o = redis.call('HGETALL', base .. 'owed:' .. pid)
  if #o == 0 then
    redis.call('ZREM', KEYS[10], pid)
  else
    redis.call('ZADD', KEYS[10], now + 10000, pid)
    for j = 1, #o, 2 do
      owed[#owed + 1] = pid
      owed[#owed + 1] = o[j]
      owed[#owed + 1] = o[j + 1]
    end
  end
end
local due = {}
for _, cid in ipairs(redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', now, 'LIMIT', 0, limit)) do
  local open = redis.pcall('SMEMBERS', base .. 'parents:' .. cid)
  if failed(open) then
    open = {}
  end
  redis.call('ZADD', KEYS[11], now + tonumber(ARGV[4]), cid)
  table.insert(open, 1, cid)
  due[#due + 1] = open
end
local nxt = -1
for _, z in ipairs({KEYS[10], KEYS[11]}) do
  local first = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
  if first[2] then
    local d = math.max(tonumber(first[2]) - now, 0)
    if nxt < 0 or d < nxt then
      nxt = d
    end
  end
end
if more_parked then
  nxt = 0 -- more keys' parked jobs to send back: reap again soon
end
return {requeued, failedn, cleaned, redis.call('ZCARD', KEYS[1]), registered, nxt, owed, due}
