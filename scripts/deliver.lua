#!lua flags=allow-oom
-- deliver.lua: tell jobs of this queue how their parents ended (see
-- deliver in prelude.lua), and pass on the end of those it cancels. It is
-- idempotent, so a reaper may deliver again what a dead caller had
-- delivered already. It runs when Redis is out of memory too (allow-oom),
-- so that a full Redis still moves its deferred jobs on.
--
-- KEYS[1] job key prefix  <prefix>:{<queue>}:job:
--
-- ARGV[1] ms until a reaper checks the links of the jobs named here again,
--         for those still deferred (0 = leave their check as it is)
-- ARGV[2..] triples of job id, parent `<queue>:<id>`, and the parent's end:
--         finished, failed, canceled, gone, or open (nothing to deliver:
--         the job is only named for ARGV[1])
--
-- Returns {owed, status...}: owed is what the jobs it canceled owe their
-- dependents in other queues (this queue's outbox holds them), as triples
-- of job id, dependent and end, for the caller to deliver in turn; then the
-- status of the job of each triple after it ('' when there is none).
lazy() -- the helpers defined on demand (prelude.lua)
local base = string.sub(KEYS[1], 1, -5)
local err = check_deps(base)
if err then
  return err
end
local now = now_ms()
local owed = {}
local out = {owed}
for i = 2, #ARGV, 3 do
  local cid, pref, st = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if st ~= 'open' then
    local r = deliver(base, cid, pref, st, now)
    if r then
      ended(base, cid, 'canceled', r[1], r[2], now, owed, r[3], r[4], r[5])
    end
  end
  local cur = redis.pcall('HGET', KEYS[1] .. cid, 'status')
  if failed(cur) or not cur then
    cur = ''
  end
  if cur == 'deferred' then
    if tonumber(ARGV[1]) > 0 then
      redis.call('ZADD', base .. 'deferred', 'XX', now + tonumber(ARGV[1]), cid)
    end
  else
    -- It waits no more, and the deferred set still names it (an entry
    -- written back by hand, say): the entry goes.
    redis.call('ZREM', base .. 'deferred', cid)
    if cur == '' then
      -- Deleted by hand: nothing waits any more.
      redis.call('DEL', base .. 'parents:' .. cid)
    end
  end
  out[#out + 1] = cur
end
return out
