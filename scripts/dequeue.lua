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
-- ARGV[5] the worker's free handler slots: under a Concurrency, it takes no
--         more than those (at least one) so that jobs it would hold ahead
--         do not take the queue's slots from workers that could run them
-- ARGV[6] under a Concurrency (and no rate or key limits), the most jobs to
--         hand out *ahead*, beyond the slots: leased but holding no slot,
--         for the worker to start in the slot of one of its jobs that ends
--         (see ack_many.lua); absent or 0: none
-- ARGV[7] how many of the worker's jobs hold a slot and have not ended (its
--         running handlers, at most): with the slots this call hands out,
--         the most jobs ahead it can start
--
-- The queue's flow hash <prefix>:{<queue>}:flow (limits.go; its key is KEYS[6]
-- less "job:", as are those below) holds its limits and whether it is
-- paused. Without it, none of the rest of this paragraph applies. A paused
-- queue hands out nothing. Concurrency caps the jobs whose lease has not
-- expired; Rate and Per limit the attempts started, by GCRA (gcra in
-- prelude.lua, state in the flow hash's tat field). A job with a limit key
-- (flag k) over its key's KeyConcurrency (its running jobs are the
-- <prefix>:{<queue>}:slots:<key> zset) or KeyRate (state in the string
-- <prefix>:{<queue>}:rate:<key>) is parked, not handed out: it goes to the
-- list <prefix>:{<queue>}:park:<key> and the zset <prefix>:{<queue>}:parked
-- (id -> when), and its key to <prefix>:{<queue>}:parkkeys (key -> when to
-- look at it again), and the next ready job is looked at, so one key's jobs
-- never hold back another's. A key's parked jobs come back to the head of
-- the queue when one of its jobs leaves the active set (unslot in
-- prelude.lua), or when its time in parkkeys comes (here).
--
-- Jobs handed out ahead are also in the zset <prefix>:{<queue>}:ahead (id
-- -> lease deadline, renewed with the lease: extend.lua). The slots in use
-- are the jobs whose lease has not expired less those still ahead.
--
-- Returns {next_ms, now_ms, left, active, hold, hold_ms, parked, ahead, <job 1>,
-- <job 2>, ...}: next_ms is the earliest remaining scheduled time or time to look at
-- a parked key (0 when none), now_ms the jobs' started_at, left the ready
-- jobs still pending, active the size of the active set. hold says why the
-- queue has work the worker must not ask for now: 0 none, 1 paused (until
-- Resume tells the workers on the active set's channel), 2 its Concurrency
-- is full (until a job leaves the active set: freed in prelude.lua tells
-- them; hold_ms is in how long the earliest lease expires), 3 its Rate
-- (for hold_ms). parked is how many of its jobs are parked for their keys
-- (-1 without a flow hash: the acks of its jobs then need not tell anyone
-- of the slots they free, see ack_many.lua's ARGV[2]). ahead is how many of
-- the jobs, the last ones, are handed out ahead (ARGV[6]). While it holds, the
-- wake list keeps its token, so that enqueues wake nobody. Each job is 18
-- elements: id, token, attempt (the new ones), then the values (nil when
-- absent) of the hash fields id, func, args, max_retries, timeout_ms,
-- result_ttl_ms, failure_ttl_ms, backoff, created_at, enqueued_at,
-- scheduled_at, ended_at, result, error, in this order (not queue: the
-- worker knows it), and then false for a plain job (no flags), else
-- {parents, limit_key, headers} (each false when absent). The job's status
-- is `started` and its worker ARGV[3].
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
local now, nows = clock()
local due = redis.pcall('ZRANGEBYSCORE', KEYS[3], '-inf', nows, 'LIMIT', '0', '1000')
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
local base = string.sub(prefix, 1, -5)
-- EXISTS first: a queue without limits (no flow hash) costs no more.
local flow = {}
if redis.call('EXISTS', base .. 'flow') == 1 then
  flow = redis.pcall('HGETALL', base .. 'flow')
  if failed(flow) then
    return bad(base .. 'flow', 'hash')
  end
end

for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[3], id)
  local k = prefix .. id
  if redis.call('TYPE', k).ok == 'hash' then
    redis.call('HSET', k, 'status', 'queued', 'enqueued_at', nows)
    redis.call('RPUSH', KEYS[1], id)
    left = left + 1
  end
end

local out = {0, now, 0, active, 0, 0, -1, 0}
local ask = tonumber(ARGV[1])
local lim, keyed, hold = nil, false, 0
local qgap, qt0, qa, qfree
local aheadKey, ahead = nil, 0
if #flow > 0 then
  lim = {}
  for f = 1, #flow, 2 do
    local v = tonumber(flow[f + 1])
    if not v then
      return redis.error_reply('rqgo: key ' .. base .. 'flow holds ' .. flow[f] .. ' "' ..
        string.sub(flow[f + 1], 1, 40) .. '", not a number; nothing was changed: repair it or set the limits again')
    end
    lim[flow[f]] = v
  end
  if ((lim.rate or 0) > 0 and (lim.per_ms or 0) <= 0) or ((lim.key_rate or 0) > 0 and (lim.key_per_ms or 0) <= 0) then
    return redis.error_reply('rqgo: key ' .. base .. 'flow holds a rate without its period; nothing was changed: set the limits again')
  end
  keyed = (lim.key_concurrency or 0) > 0 or (lim.key_rate or 0) > 0
  if keyed or (lim.rate or 0) > 0 then
    lazy() -- the helpers rates and limit keys need (prelude.lua)
  end
  if lim.paused == 1 then
    hold, ask = 1, 0
  end
  if hold == 0 and (lim.concurrency or 0) > 0 then
    aheadKey = base .. 'ahead'
    ask = math.min(ask, math.max(tonumber(ARGV[5]) or ask, 1))
    qfree = lim.concurrency - redis.call('ZCOUNT', KEYS[2], '(' .. nows, '+inf') +
      redis.call('ZCOUNT', aheadKey, '(' .. nows, '+inf')
    if not keyed and (lim.rate or 0) <= 0 then
      ahead = tonumber(ARGV[6]) or 0
    end
    if qfree <= 0 then
      hold, ask = 2, 0
    else
      ask = math.min(ask, qfree)
    end
  end
  if ask > 0 and (lim.rate or 0) > 0 then
    qa, qgap, qt0 = gcra(lim.tat, lim.rate, lim.per_ms, now)
    if qa <= 0 then
      hold, ask = 3, 0
      out[6] = math.ceil(qt0 - lim.per_ms / 100 - now)
    else
      ask = math.min(ask, qa)
    end
  end
end

-- Limit keys (only with a flow hash): each key's state, read once per call,
-- and when to look at a key's parked jobs again: when its rate allows the
-- next start, or, when its slots are full, when the earliest of their
-- leases expires (a job that ends before moves them on: unslot).
-- Without key limits a queue has no parked jobs (SetLimits sent them back),
-- unless its flow hash was edited by hand: the parked keys are looked at
-- only when some remain.
local ks, keystate, when = {}, nil, nil
local nparked, parking = 0, false
if lim then
  local counts = {}
  for _, z in ipairs({base .. 'parked', base .. 'parkkeys'}) do
    counts[#counts + 1] = redis.pcall('ZCARD', z)
    if failed(counts[#counts]) then
      return bad(z, 'zset')
    end
  end
  nparked, parking = counts[1], keyed or counts[2] > 0
end
if parking then
  keystate = function(lk)
    local s = ks[lk]
    if s then
      return s
    end
    s = {free = math.huge, used = 0}
    if (lim.key_concurrency or 0) > 0 then
      local n, first = slots(base, lk, now)
      s.free, s.first = lim.key_concurrency - n, first
    end
    if (lim.key_rate or 0) > 0 then
      -- "<tat>:<gen>": a state from before the last SetLimits is stale.
      local st = redis.pcall('GET', base .. 'rate:' .. lk)
      local tat, g = nil, nil
      if type(st) == 'string' then
        tat, g = string.match(st, '^([%d.]+):(%d+)$')
      end
      if tonumber(g) ~= (lim.gen or 0) then
        tat = nil
      end
      local a, gap, t0 = gcra(tat, lim.key_rate, lim.key_per_ms, now)
      if a < s.free then
        s.free, s.rated = a, true
      end
      s.gap, s.t0 = gap, t0
    end
    ks[lk] = s
    return s
  end
  when = function(s)
    if s.free > 0 then
      return now
    elseif s.rated then
      return math.ceil(s.t0 + s.used * s.gap - lim.key_per_ms / 100)
    end
    return s.first or now + tonumber(ARGV[2])
  end
end
local touched = {}
if parking and ask > 0 then
  -- Parked keys whose time came: their jobs go back to the head of the
  -- queue, as many as the key lets start.
  for _, lk in ipairs(redis.call('ZRANGEBYSCORE', base .. 'parkkeys', '-inf', nows, 'LIMIT', '0', '100')) do
    local s = keyed and keystate(lk) or {free = math.huge, used = 0}
    ks[lk] = s
    s.parks = true
    if not s.seen then
      s.seen = true
      touched[#touched + 1] = lk
    end
    local back = {}
    local pk = base .. 'park:' .. lk
    while #back < math.min(s.free, ask) do
      local id = redis.pcall('LPOP', pk)
      if type(id) ~= 'string' then
        break
      end
      back[#back + 1] = id
    end
    for b = #back, 1, -1 do
      redis.call('ZREM', base .. 'parked', back[b])
      redis.call('LPUSH', KEYS[1], back[b])
    end
    left = left + #back
  end
end

local n = 0
local scanned = 0
local deadline = string.format('%d', now + tonumber(ARGV[2]))
-- Jobs ahead are taken only from those no other worker could start now:
-- beyond the free slots this call leaves.
local slotted = nil
if ahead > 0 then
  ahead = math.min(ahead, ask + (tonumber(ARGV[7]) or 0), left - math.max(qfree, 0))
end
local aheadIds = {}
if ahead > 0 then
  slotted = ask
  ask = ask + ahead
end
while left > 0 and n < ask and scanned < 1000 do
  local ids = redis.call('LPOP', KEYS[1], string.format('%d', ask - n))
  if not ids then
    left = 0
    break
  end
  scanned = scanned + #ids
  left = left - #ids
  local tok = redis.call('INCRBY', KEYS[4], string.format('%d', #ids)) - #ids
  local leased = {}
  for _, id in ipairs(ids) do
    local k = prefix .. id
    tok = tok + 1
    local token = string.format('%d:', tok) .. (ARGV[4] or '')
    -- A key that is not a hash is skipped, as is a job whose hash is gone
    -- (deleted by hand): there is nothing to run.
    -- 16 fields: Redis turns the reply into a table grown by doubling, so a
    -- 17th would cost it one more copy. (The queue's name is known.)
    local h = redis.pcall('HMGET', k, 'id', 'func', 'args', 'max_retries',
      'timeout_ms', 'result_ttl_ms', 'failure_ttl_ms', 'backoff', 'created_at',
      'enqueued_at', 'scheduled_at', 'ended_at', 'result', 'error', 'attempt', 'flags')
    local found = false
    if not failed(h) then
      for f = 1, 16 do
        if h[f] then
          found = true
          break
        end
      end
      found = found or redis.call('EXISTS', k) == 1
    end
    local fl = found and h[16] ~= '' and h[16] -- '' for a plain job
    if fl then
      lazy() -- the helpers flags need (prelude.lua)
    end
    local startBy = nil
    if fl and string.find(fl, 's', 1, true) then
      local within = tonumber(redis.call('HGET', k, 'start_within_ms'))
      startBy = within and (tonumber(h[9]) or 0) + within
    end
    local lk = keyed and fl and string.find(fl, 'k', 1, true) and redis.call('HGET', k, 'limit_key')
    if startBy and now > startBy then
      -- It missed its window (StartWithin): canceled, not started.
      found = false
      local d, w, u, uf, c = extras(k, fl)
      local ttl = tonumber(h[7]) or 604800000 -- DefaultFailureTTL
      if ttl == 0 then
        redis.call('DEL', k)
      else
        redis.call('HSET', k, 'status', 'canceled', 'ended_at', nows,
          'error', 'expired: not started by ' .. startBy .. ' (Unix ms), ' .. (startBy - (tonumber(h[9]) or 0)) ..
          ' ms after it was enqueued (StartWithin)')
        redis.pcall('ZADD', base .. 'canceled', nows, id)
        if ttl > 0 then
          redis.call('PEXPIRE', k, ttl)
        end
      end
      ended(base, id, 'canceled', d, w, now, nil, u, uf, c)
    elseif lk and keystate(lk).free <= 0 and not failed(redis.pcall('RPUSH', base .. 'park:' .. lk, id)) then
      -- Over its key's limit: parked until the key lets it start. (A
      -- damaged park list makes it run instead: a job is never dropped.)
      found = false
      redis.call('ZADD', base .. 'parked', nows, id)
      ks[lk].parks = true
      if not ks[lk].seen then
        ks[lk].seen = true
        touched[#touched + 1] = lk
      end
    elseif fl and string.find(fl, 'S', 1, true) then
      -- Unique until started: the key is free once an attempt starts.
      local x = redis.call('HMGET', k, 'unique_key', 'unique_for_ms', 'created_at')
      if x[1] then
        unhold(base, id, x[1], x[2], x[3], now)
      end
    end
    if found then
      if lk then
        local s = ks[lk]
        s.free, s.used = s.free - 1, s.used + 1
        if (lim.key_concurrency or 0) > 0 then
          redis.pcall('ZADD', base .. 'slots:' .. lk, nows, id)
        end
        if not s.seen then
          s.seen = true
          touched[#touched + 1] = lk
        end
      end
      local attempt = (tonumber(h[15]) or 0) + 1
      redis.call('HSET', k, 'attempt', string.format('%d', attempt), 'status', 'started', 'started_at', nows, 'worker', ARGV[3], 'token', token)
      leased[#leased + 1] = deadline
      leased[#leased + 1] = id
      n = n + 1
      if slotted and n > slotted then
        aheadIds[#aheadIds + 1] = deadline
        aheadIds[#aheadIds + 1] = id
      end
      if #leased >= 1000 then
        redis.call('ZADD', KEYS[2], unpack(leased))
        leased = {}
      end
      out[#out + 1] = id
      out[#out + 1] = token
      out[#out + 1] = attempt
      for f = 1, 14 do
        out[#out + 1] = h[f]
      end
      -- A job's parents, for its handler ([Job.FetchParents]).
      -- What a flagged job has more, in one element: false for a plain job.
      if fl then
        out[#out + 1] = {
          string.find(fl, 'p', 1, true) and redis.call('HGET', k, 'parents') or false,
          lk or (string.find(fl, 'k', 1, true) and redis.call('HGET', k, 'limit_key')) or false,
          string.find(fl, 'h', 1, true) and redis.call('HGET', k, 'headers') or false}
      else
        out[#out + 1] = false
      end
    end
  end
  if #leased > 0 then
    redis.call('ZADD', KEYS[2], unpack(leased))
  end
end
if #aheadIds > 0 then
  redis.call('ZADD', aheadKey, unpack(aheadIds))
  out[8] = #aheadIds / 2
end
if active == 0 and n > 0 then
  -- Idle workers reap a queue only while it has leases: tell them.
  redis.call('PUBLISH', KEYS[2], '1')
end
out[4] = active + n
if lim then
  if qgap and n > 0 then
    redis.call('HSET', base .. 'flow', 'tat', string.format('%.3f', qt0 + n * qgap))
  end
  -- What this call spent of each key's limits, and when to look at the
  -- jobs still parked for it.
  for _, lk in ipairs(touched) do
    local s = ks[lk]
    if s.gap and s.used > 0 then
      local tat = s.t0 + s.used * s.gap
      redis.pcall('SET', base .. 'rate:' .. lk, string.format('%.3f', tat) .. ':' .. (lim.gen or 0), 'PX',
        math.ceil(tat - now + lim.key_per_ms / 100) + 1000)
    end
    -- Only a key that parked or got jobs back here: one whose jobs all ran
    -- has no parked jobs, or an entry in parkkeys that is still right.
    if s.parks then
      local pl = redis.pcall('LLEN', base .. 'park:' .. lk)
      if not failed(pl) and pl > 0 then
        redis.call('ZADD', base .. 'parkkeys', when(s), lk)
      else
        redis.call('ZREM', base .. 'parkkeys', lk)
      end
    end
  end
  if left > 0 and hold == 0 then
    -- A limit of the queue stopped this call short.
    if qa and n >= qa then
      hold = 3
      out[6] = math.ceil(qt0 + n * qgap - lim.per_ms / 100 - now)
    end
    if qfree and (slotted or n) >= qfree then
      hold = 2
    end
  end
  if hold == 0 and left > 0 and lim.held == 1 then
    -- Slots are free and other workers wait for one: this fetch took what
    -- it could (see ack_many.lua's KEYS[4]).
    redis.call('HDEL', base .. 'flow', 'held')
    wake(base .. 'slot')
  end
  if hold == 2 then
    if lim.held ~= 1 then -- (set already: no write)
      redis.call('HSET', base .. 'flow', 'held', '1')
    end
    local first = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. nows, '+inf', 'WITHSCORES', 'LIMIT', '0', '1')
    out[6] = first[2] and math.max(tonumber(first[2]) - now, 1) or 1
  end
  out[5] = hold
  out[7] = parking and redis.call('ZCARD', base .. 'parked') or nparked
end
out[3] = left
if hold > 0 then
  -- Held: the token stays, so that enqueues wake nobody (see above).
elseif left > 0 then
  -- Pass the wake-up on while work remains (one token at most).
  wake(KEYS[5])
else
  -- Nothing left: the next job enqueued must wake the workers again.
  redis.call('DEL', KEYS[5])
end

local nxt = redis.call('ZRANGE', KEYS[3], '0', '0', 'WITHSCORES')
if nxt[2] then
  out[1] = tonumber(nxt[2])
end
if parking then
  local pk = redis.call('ZRANGE', base .. 'parkkeys', '0', '0', 'WITHSCORES')
  if pk[2] and (out[1] == 0 or tonumber(pk[2]) < out[1]) then
    out[1] = math.max(tonumber(pk[2]), 1)
  end
end
return out
