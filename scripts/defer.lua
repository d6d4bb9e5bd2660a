#!lua
-- defer.lua: create a job that waits for its parents (status deferred).
-- The caller then links it to each parent (link.lua, in the parent's
-- queue) and delivers what the parents answered (deliver.lua); a reaper of
-- this queue does both for a job whose check is due (see reap.lua), so a
-- caller that dies after this script strands nothing.
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
-- KEYS[2] deferred zset   <prefix>:{<queue>}:deferred  (id -> when a reaper
--         checks its links next, Unix ms)
-- KEYS[3] open parents    <prefix>:{<queue>}:parents:<id>  (set of
--         `<queue>:<id>` of the parents that have not ended yet)
-- KEYS[4] active zset     <prefix>:{<queue>}:active  (also a channel)
-- KEYS[5] scheduled zset, KEYS[6] finished zset, KEYS[7] failed zset,
-- KEYS[8] canceled zset: read for stale entries of an id the caller chose
-- KEYS[9] unique key      <prefix>:{<queue>}:unique:<key>, only for a job
--         with one (see claim in prelude.lua)
--
-- ARGV[1] job id
-- ARGV[2] absolute ready time, Unix ms (0 = now), once the parents are done
-- ARGV[3] delay from Redis's clock, ms (0 = none; wins over ARGV[2])
-- ARGV[4] '1' when rqgo made the id up (see enqueue.lua), else '0'
-- ARGV[5] ms until a reaper checks the links (the caller makes them first)
-- ARGV[6] N, the number of parents
-- ARGV[7..6+N] the parents, `<queue>:<id>`
-- ARGV[7+N..] field, value pairs stored in the job hash
--
-- Returns {code, now_ms, holder, holder_status}: code 0 = a job with this
-- id exists (nothing written), 3 = deferred, 5 = the job holder holds the
-- unique key (nothing written).
lazy() -- the helpers defined on demand (prelude.lua)
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then
    return bad(KEYS[1], 'hash')
  end
  if ARGV[4] == '1' then
    return {3, tonumber(redis.call('HGET', KEYS[1], 'created_at')) or 0, '', ''}
  end
  return {0, 0, '', ''}
end
local err = check(KEYS[2], 'zset', KEYS[3], 'set', KEYS[4], 'zset', KEYS[5], 'zset', KEYS[6], 'zset', KEYS[7], 'zset', KEYS[8], 'zset')
if not err and KEYS[9] then
  err = check(KEYS[9], 'string')
end
if err then
  return err
end
local id = ARGV[1]
if KEYS[9] then
  local holder, hst = claim(KEYS[9], string.sub(KEYS[1], 1, #KEYS[1] - #id), id)
  if holder then
    return {5, 0, holder, hst}
  end
end
if ARGV[4] ~= '1' then
  -- As in enqueue.lua: entries of an expired job with this id go.
  for i = 4, 8 do
    redis.call('ZREM', KEYS[i], id)
  end
  redis.call('DEL', KEYS[3])
end
local now = now_ms()
local at = tonumber(ARGV[2])
local delay = tonumber(ARGV[3])
if delay > 0 then
  at = now + delay
end
local n = tonumber(ARGV[6])
local parents = {}
for i = 7, 6 + n, 1000 do
  local last = math.min(i + 999, 6 + n)
  redis.call('SADD', KEYS[3], unpack(ARGV, i, last))
  parents[#parents + 1] = table.concat(ARGV, ' ', i, last)
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  -- Tell the queue's workers to reap it: they check its deferred jobs.
  redis.call('PUBLISH', KEYS[4], '1')
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), id)
redis.call('HSET', KEYS[1], 'status', 'deferred', 'created_at', now, 'parents', table.concat(parents, ' '), unpack(ARGV, 7 + n))
if at > 0 then
  redis.call('HSET', KEYS[1], 'scheduled_at', at)
end
return {3, now, '', ''}
