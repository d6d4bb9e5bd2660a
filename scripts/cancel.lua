#!lua flags=allow-oom
-- cancel.lua: cancel a queued, scheduled or deferred job, or ask a running
-- one to stop. It runs when Redis is out of memory too (allow-oom): a
-- canceled job takes no more room than a queued one.
--
-- A running (started) job is not ended here: the cancel is recorded on it
-- first (field cancel_requested, flag c), then published on the active
-- set's channel as "cancel:<id>" for the worker that runs it, which also
-- finds the flag at its next heartbeat (extend.lua). The script that ends
-- the attempt decides, checking the attempt's token: fail.lua, reap.lua and
-- release.lua end a flagged job canceled, with no retry; ack_many.lua
-- finishes it when its handler returned a result anyway.
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
-- KEYS[2] pending list    <prefix>:{<queue>}:pending
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[4] canceled zset   <prefix>:{<queue>}:canceled  (id -> end time ms)
--
-- ARGV[1] job id
-- ARGV[2] TTL of the canceled job when it sets no failure_ttl_ms, ms
--         (0 = keep nothing, -1 = forever)
--
-- Returns {code, status}: 1 = canceled, 2 = canceled, and its end is owed
-- to dependents in other queues (see ended in prelude.lua), 3 = running:
-- the cancel is recorded and its worker told, 0 = no such job, -1 = the
-- job's status (returned) does not allow it. A list or set of the wrong type answers
-- an error naming it, and nothing is written.
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'hash', KEYS[2], 'list', KEYS[3], 'zset', KEYS[4], 'zset')
if err then
  return err
end
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
  return {0, ''}
end
local h = redis.call('HMGET', KEYS[1], 'status', 'failure_ttl_ms', 'flags')
local st = h[1]
if h[3] == '' then
  h[3] = false -- a plain job
end
if not st then
  return {0, ''}
end
local base = string.sub(KEYS[1], 1, -5 - #ARGV[1])
if (h[3] and string.find(h[3], 'd', 1, true)) or st == 'deferred' then
  err = check_deps(base)
  if err then
    return err
  end
end
if st == 'queued' then
  if redis.call('LREM', KEYS[2], 0, ARGV[1]) == 0 and h[3] and string.find(h[3], 'k', 1, true) then
    local lk = redis.call('HGET', KEYS[1], 'limit_key')
    if lk then
      unpark(base, ARGV[1], lk) -- parked for its limit key
    end
  end
elseif st == 'scheduled' then
  redis.call('ZREM', KEYS[3], ARGV[1])
elseif st == 'deferred' then
  redis.call('ZREM', base .. 'deferred', ARGV[1])
  redis.call('DEL', base .. 'parents:' .. ARGV[1])
elseif st == 'started' then
  if not (h[3] and string.find(h[3], 'c', 1, true)) then
    redis.call('HSET', KEYS[1], 'cancel_requested', now_ms())
    flag(KEYS[1], 'c')
  end
  redis.call('PUBLISH', base .. 'active', 'cancel:' .. ARGV[1])
  return {3, st}
else
  return {-1, st}
end
local now = now_ms()
local ttl = tonumber(h[2]) or tonumber(ARGV[2])
local d, w, u, uf, c = extras(KEYS[1], h[3])
if ttl == 0 then
  redis.call('DEL', KEYS[1])
else
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'ended_at', now)
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  if ttl > 0 then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
if h[3] and ended(base, ARGV[1], 'canceled', d, w, now, nil, u, uf, c) then
  return {2, st}
end
return {1, st}
