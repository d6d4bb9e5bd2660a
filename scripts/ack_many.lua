#!lua flags=allow-oom
-- ack_many.lua: record the successful attempts of a batch of jobs of one queue.
-- It runs when Redis is out of memory too (allow-oom): acking frees memory.
--
-- KEYS[1] active zset     <prefix>:{<queue>}:active
-- KEYS[2] finished zset   <prefix>:{<queue>}:finished  (id -> end time ms)
-- KEYS[3] job key prefix  <prefix>:{<queue>}:job:  (job keys are this plus the
--         id, so they share the queue's hash tag and Cluster slot)
-- KEYS[4] flow hash       <prefix>:{<queue>}:flow, given when the acking
--         worker fetches from this queue next: the slots it frees under a
--         Concurrency are then left to it, and its fetch tells the other
--         workers when some remain (see dequeue.lua); without it, they are
--         told here (freed in prelude.lua)
--
-- ARGV[1] result TTL ms for jobs that set none (0 = keep nothing, -1 = forever)
-- ARGV[2] '0' when the worker's last fetch from the queue found no flow hash
--         (dequeue.lua): its jobs were leased while the queue had no limits,
--         so no worker waits for the slots they free and freed is not asked;
--         '1' otherwise. (A Concurrency set since then wakes its waiting
--         workers at the next ack of a job leased under it, or when their
--         hold ends.)
-- ARGV[3..] job id, attempt token the worker was given, result JSON: one
--           triple per job; then, when the worker started jobs it held
--           ahead (dequeue.lua's ARGV[6]) in the slots of these, an empty
--           string and their ids: each leaves the queue's ahead zset
--           <prefix>:{<queue>}:ahead, holding the slot of the job it followed
--
-- Returns one code per job, in order: 1 = recorded, 2 = recorded, and the
-- job's end is owed to dependents in other queues (see ended in
-- prelude.lua), 0 = the token is stale
-- (the lease was lost and the job belongs to another attempt now, or its key
-- is damaged): nothing is written for that job, the others are recorded.
-- The finished set is written last, so it is checked first; the active set
-- fails, if it does, at the first ZREM, before anything is written.
local err = check(KEYS[2], 'zset')
if err then
  return err
end
local now, nows = clock()
local default = tonumber(ARGV[1])
local base = string.sub(KEYS[3], 1, -5)
-- Every job's fields are read first, once: the keys passing a job's end on
-- to its dependents may write (check_deps) are checked only when some job
-- of the batch has dependents (flag d), so a batch without pays for no
-- check it does not need, and a damaged key still fails the call before
-- anything is written.
-- pcall: a key that is not a hash must not stop the batch (Redis does not
-- roll a script back); it is refused like a stale token.
local hs = {}
local flagged, deps, keyed = false, false, false
local last = #ARGV -- the last argument of the jobs' triples
for i = 3, #ARGV, 3 do
  if ARGV[i] == '' then
    last = i - 1
    break
  end
  local h = redis.pcall('HMGET', KEYS[3] .. ARGV[i], 'token', 'result_ttl_ms', 'flags')
  if type(h) == 'table' and h[3] and h[3] ~= '' then
    flagged = true
    deps = deps or string.find(h[3], 'd', 1, true) ~= nil
    keyed = keyed or string.find(h[3], 'k', 1, true) ~= nil
  end
  hs[i] = h
end
-- A queue with no key's jobs parked (none in parkkeys) has none for the
-- slots its limit keys' jobs free here to move on (unslot): one look for the
-- batch rather than one per job. (Acks park nothing.)
local parkless = keyed and redis.call('EXISTS', base .. 'parkkeys') == 0
if flagged then
  lazy() -- the helpers flags need (prelude.lua)
end
if deps then
  err = check_deps(base)
  if err then
    return err
  end
end
local out = {}
local finished = {}
local freeing = false
for i = 3, last, 3 do
  local id = ARGV[i]
  local k = KEYS[3] .. id
  local h = hs[i]
  local code = 0
  -- ZREM's reply is the lease check: the job must still be active.
  local removed = 0
  if type(h) == 'table' and h[1] == ARGV[i + 1] then
    if h[3] == '' then
      h[3] = false -- a plain job
    end
    removed = redis.pcall('ZREM', KEYS[1], id)
    if failed(removed) then
      return bad(KEYS[1], 'zset')
    end
  end
  if removed == 1 then
    code = 1
    freeing = true
    local d, w, u, uf, c
    if h[3] then
      d, w, u, uf, c = extras(k, h[3])
      unslot_job(base, k, id, h[3], parkless)
    end
    local ttl = tonumber(h[2]) or default
    if ttl == 0 then
      redis.call('DEL', k)
    else
      redis.call('HDEL', k, 'token')
      redis.call('HSET', k, 'status', 'finished', 'ended_at', nows, 'result', ARGV[i + 2])
      finished[#finished + 1] = nows
      finished[#finished + 1] = id
      if ttl > 0 then
        redis.call('PEXPIRE', k, h[2] and string.format('%d', ttl) or ARGV[1])
      else
        redis.call('PERSIST', k)
      end
    end
    -- Only a job with dependents, waiters or a unique key has an end to
    -- pass on.
    if (d or w or u) and ended(base, id, 'finished', d, w, now, nil, u, uf, c) then
      code = 2
    end
  end
  out[#out + 1] = code
end
if #finished > 0 then
  redis.call('ZADD', KEYS[2], unpack(finished))
end
-- Jobs that were ahead now hold the slots of jobs that ended. (One whose
-- lease was lost meanwhile may be ahead in another worker now: it then
-- counts as holding a slot early, which only leaves a slot unused.)
if last < #ARGV then
  local next = {}
  for i = last + 2, #ARGV do
    next[#next + 1] = ARGV[i]
  end
  redis.pcall('ZREM', base .. 'ahead', unpack(next))
end
if freeing and not KEYS[4] and ARGV[2] ~= '0' then
  freed(base)
end
return out
