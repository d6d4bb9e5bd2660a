#!lua
-- requeue.lua: put failed or canceled jobs back in line, attempts reset.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] failed zset     <prefix>:{<queue>}:failed
-- KEYS[3] canceled zset   <prefix>:{<queue>}:canceled
-- KEYS[4] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[5] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
--
-- ARGV[1..] job ids
--
-- Returns {requeued, dups}: how many jobs were requeued, and, for each job
-- left alone because another job holds its unique key (see claim in
-- prelude.lua), its id and the holder's. Ids that are not failed or
-- canceled are left alone; ids whose hash expired leave the registries. A key of the
-- wrong type answers an error naming it, and nothing is written.
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'list', KEYS[2], 'zset', KEYS[3], 'zset')
if err then
  return err
end
local now = now_ms()
local n = 0
local dups = {}
local base = string.sub(KEYS[5], 1, -5)
for _, id in ipairs(ARGV) do
  local k = KEYS[5] .. id
  local h = redis.pcall('HMGET', k, 'status', 'unique_key')
  local st = nil -- not a job: its id leaves the registries
  if not failed(h) then
    st = h[1]
  end
  if (st == 'failed' or st == 'canceled') and h[2] then
    -- It takes its unique key again, unless another job holds it.
    local uk = base .. 'unique:' .. h[2]
    if redis.call('TYPE', uk).ok ~= 'string' and redis.call('EXISTS', uk) == 1 then
      return bad(uk, 'string')
    end
    local holder = claim(uk, KEYS[5], id)
    if holder then
      dups[#dups + 1] = id
      dups[#dups + 1] = holder
      st = 'held'
    end
  end
  if st == 'failed' or st == 'canceled' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HSET', k, 'status', 'queued', 'enqueued_at', now, 'attempt', 0)
    redis.call('HDEL', k, 'ended_at', 'started_at', 'result', 'token', 'cancel_requested')
    -- A cancel asked while an earlier attempt ran is done with (cancel.lua).
    local fl = redis.call('HGET', k, 'flags')
    if fl and string.find(fl, 'c', 1, true) then
      redis.call('HSET', k, 'flags', (string.gsub(fl, 'c', '')))
    end
    redis.call('PERSIST', k)
    redis.call('RPUSH', KEYS[1], id)
    n = n + 1
  elseif not st then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
  end
end
if n > 0 then
  wake(KEYS[4])
end
return {n, dups}
