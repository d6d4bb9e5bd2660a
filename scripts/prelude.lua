-- prelude.lua: helpers that scripts.go puts at the top of every script (after
-- its flags line). Redis does not roll a script back when a command fails
-- halfway, so every script checks the keys it will write, and the numbers
-- it will use, before its first write: a damaged key answers with an error
-- that names it, and moves nothing.

-- now_ms is Redis's clock, Unix ms.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- clock is Redis's clock, Unix ms, as a number and as a string. The scripts
-- run for every job pass strings to redis.call, not numbers, where they
-- can: Redis formats each number argument with sprintf, as Lua does each
-- number it turns into a string, and that costs more than the rest of the
-- command; string.format('%d', n) costs a fraction of it.
local function clock()
  local t = redis.call('TIME')
  local s = t[1] .. string.sub('00000' .. t[2], -6, -4)
  return tonumber(s), s
end

-- bad returns the error reply for key, which holds another type than want.
-- Given the error e of the write that failed, it returns e itself when the
-- key is of the right type after all (a server that refuses the write for
-- want of memory, say).
local function bad(key, want, e)
  local t = redis.call('TYPE', key).ok
  if e and (t == want or t == 'none') then
    return e
  end
  return redis.error_reply('rqgo: key ' .. key .. ' holds a ' .. t .. ', not a ' ..
    want .. '; nothing was changed: repair or delete the key')
end

-- failed says whether a redis.pcall reply is an error.
local function failed(r)
  return type(r) == 'table' and r.err ~= nil
end

-- check takes key, type pairs and returns an error reply naming the first key
-- that exists with another type, or nil when every key is absent or right.
local function check(...)
  local a = {...}
  for i = 1, #a, 2 do
    local t = redis.call('TYPE', a[i]).ok
    if t ~= 'none' and t ~= a[i + 1] then
      return bad(a[i], a[i + 1])
    end
  end
  return nil
end

-- wake makes work of the queue known to idle workers, as one token at most
-- in the wake list (for workers blocked on it) and a message on the channel
-- of the same name (for workers subscribed to it).
local function wake(key)
  if redis.call('EXISTS', key) == 0 then
    redis.call('LPUSH', key, '1')
    redis.call('PUBLISH', key, '1')
  end
end

-- freed tells a worker of the queue at base that a job left its active
-- set, when some wait for a slot of the queue's Concurrency (dequeue.lua
-- sets the flow hash's held field): one token in the slot list wakes one of
-- them, and its fetch passes the token on while slots remain.
local function freed(base)
  if redis.pcall('HGET', base .. 'flow', 'held') == '1' then
    redis.call('HDEL', base .. 'flow', 'held')
    wake(base .. 'slot')
  end
end

-- On demand: the helpers below serve jobs with flags, queues with limits
-- and jobs' ends passed on to others. Defining a function costs every call
-- of a script about as much as a Redis command, so scripts.go puts those a
-- script uses into one function, lazy, which the script calls before the
-- first of them: a plain job does not pay for them.

-- check_deps checks the keys of the queue at base (`<prefix>:{<queue>}:`)
-- that passing on a job's end may write.
local function check_deps(base)
  return check(base .. 'deferred', 'zset', base .. 'outbox', 'zset', base .. 'canceled', 'zset',
    base .. 'pending', 'list', base .. 'scheduled', 'zset')
end

-- owe records, in the outbox of the queue whose keys start with base
-- (`<prefix>:{<queue>}:`), that its job pid ended with status st and that
-- its dependent cref (`<queue>:<id>`, in another queue) has not been told
-- yet. The caller delivers it (deliver.lua) and then clears it
-- (delivered.lua); a reaper delivers what is still owed 5 s later.
local function owe(base, pid, cref, st, now)
  redis.call('HSET', base .. 'owed:' .. pid, cref, st)
  if redis.call('ZCARD', base .. 'outbox') == 0 then
    -- Tell the queue's workers to reap it (see presence.go).
    redis.call('PUBLISH', base .. 'active', '1')
  end
  redis.call('ZADD', base .. 'outbox', 'NX', now + 5000, pid)
end

-- flag adds letter f to job hash k's flags field, which tells the scripts
-- that start or end a job what more to do for it: p it has parents, d
-- dependents, w someone waits for it, u it holds a unique key, S until it
-- starts, s it must start within a time. One field for every feature, so
-- that those scripts read one field, not one per feature, of each job. A
-- plain job lacks it (a missing field reads as empty): writing it would
-- cost every plain job's enqueue more than looking for it costs its fetch
-- and ack.
local function flag(k, f)
  local cur = redis.call('HGET', k, 'flags') or ''
  if not string.find(cur, f, 1, true) then
    redis.call('HSET', k, 'flags', cur .. f)
  end
end

-- extras reads what passing on the end of job hash k, with flags fl, needs:
-- dependents ('1' or nil), waited ('1' or nil), and its unique key, For
-- window and created_at. Read it before the hash may be deleted.
local function extras(k, fl)
  if not fl or fl == '' then
    return nil
  end
  local deps = string.find(fl, 'd', 1, true) and '1' or nil
  local waited = string.find(fl, 'w', 1, true) and '1' or nil
  if string.find(fl, 'u', 1, true) then
    local x = redis.call('HMGET', k, 'unique_key', 'unique_for_ms', 'created_at')
    return deps, waited, x[1], x[2], x[3]
  end
  return deps, waited
end

-- claim takes the unique key k (`<prefix>:{<queue>}:unique:<key>`) for job
-- id, unless another job holds it: one that has not ended (with
-- unique_until = started: not started), or any while the key's For window
-- lasts (the key then has a TTL). A key whose job is gone or has ended
-- is taken over. Returns nil when id holds the key now, else the holder's
-- id and status ('' when it is gone). jp is the queue's job key prefix.
local function claim(k, jp, id)
  local holder = redis.call('GET', k)
  if holder and holder ~= id then
    local h = redis.pcall('HMGET', jp .. holder, 'status', 'unique_until')
    if failed(h) then
      h = {}
    end
    local st = h[1]
    local holds = st == 'queued' or st == 'scheduled' or st == 'deferred' or (st == 'started' and h[2] ~= 'started')
    if holds or redis.call('PTTL', k) > 0 then
      return holder, st or ''
    end
  end
  redis.call('SET', k, id)
  return nil
end

-- unhold ends job id's hold on its unique key ukey, of the queue at base,
-- if it still holds it: the key goes, or, while the job's For window
-- (created + ufor ms) lasts, expires when the window ends.
local function unhold(base, id, ukey, ufor, created, now)
  local k = base .. 'unique:' .. ukey
  if redis.pcall('GET', k) ~= id then
    return
  end
  local till = (tonumber(created) or 0) + (tonumber(ufor) or 0)
  if till > now then
    redis.call('PEXPIREAT', k, till)
  else
    redis.call('DEL', k)
  end
end

-- deliver tells job cid of the queue at base that its parent pref
-- (`<queue>:<id>`) ended with status st (finished, failed, canceled, or
-- gone: it no longer exists). It is idempotent: only the first delivery of
-- an edge removes it from the job's open parents. A deferred job whose last
-- open parent finished is released: queued, or scheduled when its
-- scheduled_at has not come. One whose parent did not finish is canceled at
-- once unless it has allow_failure. Returns {dependents, waited,
-- unique_key, unique_for_ms, created_at} of a job it canceled (the caller
-- passes the end on), else nil.
local function deliver(base, cid, pref, st, now)
  local open = base .. 'parents:' .. cid
  if redis.pcall('SREM', open, pref) ~= 1 then
    return nil
  end
  local k = base .. 'job:' .. cid
  local h = redis.pcall('HMGET', k, 'status', 'allow_failure', 'scheduled_at', 'flags', 'failure_ttl_ms')
  if failed(h) or h[1] ~= 'deferred' then
    return nil
  end
  if st ~= 'finished' and h[2] ~= '1' then
    local d, w, u, uf, c = extras(k, h[4])
    redis.call('DEL', open)
    redis.call('ZREM', base .. 'deferred', cid)
    local why = 'parent ' .. pref .. ' ' .. st
    if st == 'gone' then
      why = 'parent ' .. pref .. ' no longer exists'
    end
    local ttl = tonumber(h[5]) or 604800000 -- DefaultFailureTTL
    if ttl == 0 then
      redis.call('DEL', k)
    else
      redis.call('HSET', k, 'status', 'canceled', 'ended_at', now, 'error', why)
      redis.call('ZADD', base .. 'canceled', now, cid)
      if ttl > 0 then
        redis.call('PEXPIRE', k, ttl)
      end
    end
    return {d, w, u, uf, c}
  end
  if redis.call('EXISTS', open) == 1 then
    return nil
  end
  redis.call('ZREM', base .. 'deferred', cid)
  local at = tonumber(h[3]) or 0
  if at > now then
    redis.call('ZADD', base .. 'scheduled', at, cid)
    redis.call('HSET', k, 'status', 'scheduled')
  else
    redis.call('RPUSH', base .. 'pending', cid)
    redis.call('HSET', k, 'status', 'queued', 'enqueued_at', now)
  end
  wake(base .. 'wake')
  return nil
end

-- ended passes on the end of job id of the queue at base, with status st,
-- after its hash got its final state (or was deleted): it releases its
-- unique key (ukey, with its For window ufor and created_at time), tells
-- whoever waits for it ([Queue.Wait]; waited = '1'), and, when it has dependents
-- (deps = '1'), tells each of them, those in this queue at once (and theirs
-- in turn when one is canceled), those in other queues through the outbox.
-- The dependents set is kept as long as the job hash. Returns true when it
-- owes deliveries to other queues, and appends each to into (when given)
-- as parent id, dependent, end.
local function ended(base, id, st, deps, waited, now, into, ukey, ufor, created)
  local q = string.match(base, '{(.*)}:$')
  local owes = false
  local work = {{id, st, deps, waited, ukey, ufor, created}}
  local i = 1
  while i <= #work do
    local w = work[i]
    local pid, pst = w[1], w[2]
    if w[5] then
      unhold(base, pid, w[5], w[6], w[7], now)
    end
    if w[4] == '1' then
      redis.call('PUBLISH', base .. 'ended', pid)
    end
    if w[3] == '1' then
      local dk = base .. 'dependents:' .. pid
      local kids = redis.pcall('SMEMBERS', dk)
      if failed(kids) then
        kids = {}
      end
      local pref = q .. ':' .. pid
      for _, cref in ipairs(kids) do
        local cq, cid = string.match(cref, '^([^:]*):(.*)$')
        if cq == q then
          local r = deliver(base, cid, pref, pst, now)
          if r then
            work[#work + 1] = {cid, 'canceled', r[1], r[2], r[3], r[4], r[5]}
          end
        elseif cq then
          owe(base, pid, cref, pst, now)
          owes = true
          if into then
            into[#into + 1] = pid
            into[#into + 1] = cref
            into[#into + 1] = pst
          end
        end
      end
      local ttl = redis.call('PTTL', base .. 'job:' .. pid)
      if ttl == -2 then
        redis.call('DEL', dk)
      elseif ttl > 0 then
        redis.call('PEXPIRE', dk, ttl)
      end
    end
    i = i + 1
  end
  return owes
end

-- gcra is the generic cell rate algorithm of a limit of rate starts per per
-- ms (see limits.go), whose state tat is the theoretical arrival time (Unix
-- ms; nil for none). It lets a burst of per/100 ms worth of starts through.
-- Returns how many starts it allows now, the ms between two starts, and the
-- time they count from: tat advances by that gap per start, and when it
-- allows none, the next start is allowed at that time less per/100.
local function gcra(tat, rate, per, now)
  local gap = per / rate
  local t0 = math.max(tonumber(tat) or 0, now)
  return math.max(math.floor((now + per / 100 - t0) / gap) + 1, 0), gap, t0
end

-- slots counts the running jobs of limit key lk of the queue at base: the
-- members of its slots set whose lease (their score in the active set) has
-- not expired. It drops the others: their slots are free. Returns the count
-- and the earliest of those leases' deadlines (nil when none).
local function slots(base, lk, now)
  local sk = base .. 'slots:' .. lk
  local n, first = 0, nil
  local ids = redis.pcall('ZRANGE', sk, '0', '-1')
  if failed(ids) then
    return 0, nil -- damaged: the key's jobs run unlimited until it is repaired
  end
  for _, id in ipairs(ids) do
    local d = tonumber(redis.call('ZSCORE', base .. 'active', id))
    if d and d > now then
      n = n + 1
      if not first or d < first then
        first = d
      end
    else
      redis.call('ZREM', sk, id)
    end
  end
  return n, first
end

-- unslot frees the slot that job id held under its limit key lk, in the
-- queue at base, and moves the first job parked for that key (see
-- dequeue.lua) to the head of the queue. A job that held no slot (its key
-- has no KeyConcurrency) frees none. parkless says the caller found no key
-- of the queue with parked jobs (its parkkeys zset is empty): there is none
-- to move.
local function unslot(base, id, lk, parkless)
  if redis.pcall('ZREM', base .. 'slots:' .. lk, id) ~= 1 or parkless then
    return
  end
  local pk = base .. 'park:' .. lk
  local waiting = redis.pcall('LLEN', pk)
  if type(waiting) ~= 'number' or waiting == 0 then
    return -- nothing parked (or a damaged list: left alone)
  end
  -- A damaged key leaves the parked job where it is (checked first: a
  -- script is not rolled back).
  for _, c in ipairs({{base .. 'pending', 'list'}, {base .. 'parked', 'zset'}, {base .. 'parkkeys', 'zset'}}) do
    local t = redis.call('TYPE', c[1]).ok
    if t ~= 'none' and t ~= c[2] then
      return
    end
  end
  local nxt = redis.pcall('LPOP', pk)
  if type(nxt) == 'string' then
    redis.call('ZREM', base .. 'parked', nxt)
    redis.call('LPUSH', base .. 'pending', nxt)
    if redis.call('LLEN', pk) == 0 then
      redis.call('ZREM', base .. 'parkkeys', lk)
    end
    wake(base .. 'wake')
  end
end

-- unpark takes job id, parked for its limit key lk (see dequeue.lua), out of
-- the queue at base's parked jobs.
local function unpark(base, id, lk)
  local pk = base .. 'park:' .. lk
  redis.pcall('ZREM', base .. 'parked', id)
  if redis.pcall('LREM', pk, 0, id) == 1 and redis.call('LLEN', pk) == 0 then
    redis.pcall('ZREM', base .. 'parkkeys', lk)
  end
end

-- unslot_job frees the slot of its limit key that job id, of hash k with
-- flags fl, held while it was active in the queue at base (flag k). Call it
-- once the job left the active set, before its hash may be deleted.
-- parkless is unslot's.
local function unslot_job(base, k, id, fl, parkless)
  if fl and string.find(fl, 'k', 1, true) then
    local lk = redis.call('HGET', k, 'limit_key')
    if lk then
      unslot(base, id, lk, parkless)
    end
  end
end
