#!lua
-- unique.lua: create a job that holds a unique key (see claim in
-- prelude.lua), or answer with the job that holds it; with debounce, move
-- the holder that has not started instead.
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
-- KEYS[2] pending list    <prefix>:{<queue>}:pending
-- KEYS[3] scheduled zset  <prefix>:{<queue>}:scheduled
-- KEYS[4] wake list       <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[5] unique key      <prefix>:{<queue>}:unique:<key>  (the holder's id)
-- KEYS[6] job key prefix  <prefix>:{<queue>}:job:
-- KEYS[7..10] active, finished, failed, canceled zsets: read for stale
--         entries of an id the caller chose
--
-- ARGV[1] job id
-- ARGV[2] absolute ready time, Unix ms (0 = now)
-- ARGV[3] delay from Redis's clock, ms (0 = none; wins over ARGV[2])
-- ARGV[4] '1' when rqgo made the id up (see enqueue.lua), else '0'
-- ARGV[5] debounce ms (0 = none): the job is ready this long after the
--         newest enqueue
-- ARGV[6] debounce's longest postponement, ms after the first enqueue
--         (0 = none)
-- ARGV[7] the args JSON, for a debounced holder
-- ARGV[8..] field, value pairs stored in the job hash
--
-- Returns {code, now_ms, holder, holder_status}: code 1 = queued, 2 =
-- scheduled (this job holds the key now), 0 = a job with this id exists,
-- 5 = another job holds the key (nothing written), 4 = the holder, which
-- had not started, took these args and its new ready time (debounce).
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'hash', KEYS[2], 'list', KEYS[3], 'zset', KEYS[5], 'string')
if err then
  return err
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  if ARGV[4] == '1' then
    local h = redis.call('HMGET', KEYS[1], 'status', 'created_at')
    return {h[1] == 'scheduled' and 2 or 1, tonumber(h[2]) or 0, '', ''}
  end
  return {0, 0, '', ''}
end
local now = now_ms()
local id = ARGV[1]
local holder, hst = claim(KEYS[5], KEYS[6], id)
if holder then
  local d = tonumber(ARGV[5])
  if d > 0 and (hst == 'queued' or hst == 'scheduled') then
    local hk = KEYS[6] .. holder
    local first = tonumber(redis.call('HGET', hk, 'debounce_first')) or now
    redis.call('HSET', hk, 'args', ARGV[7])
    if hst == 'scheduled' then
      local at = now + d
      local maxw = tonumber(ARGV[6])
      if maxw > 0 and at > first + maxw then
        at = first + maxw
      end
      redis.call('ZADD', KEYS[3], 'XX', at, holder)
      redis.call('HSET', hk, 'scheduled_at', at)
    end
    return {4, now, holder, hst}
  end
  return {5, now, holder, hst}
end
if ARGV[4] ~= '1' then
  for i = 7, 10 do
    redis.pcall('ZREM', KEYS[i], id)
  end
  redis.call('ZREM', KEYS[3], id)
end
local at = tonumber(ARGV[2])
local delay = tonumber(ARGV[3])
if delay > 0 then
  at = now + delay
end
if tonumber(ARGV[5]) > 0 then
  at = math.max(at, now + tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'debounce_first', now)
end
local nows = tostring(now)
if at > now then
  redis.call('ZADD', KEYS[3], at, id)
  redis.call('HSET', KEYS[1], 'status', 'scheduled', 'created_at', nows, 'scheduled_at', at, unpack(ARGV, 8))
  wake(KEYS[4])
  return {2, now, '', ''}
end
redis.call('RPUSH', KEYS[2], id)
redis.call('HSET', KEYS[1], 'status', 'queued', 'created_at', nows, 'enqueued_at', nows, unpack(ARGV, 8))
wake(KEYS[4])
return {1, now, '', ''}
