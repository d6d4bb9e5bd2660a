#!lua
-- schedule.lua: turn one tick of a periodic entry into at most one job.
-- Every scheduler calls it for every tick; the entry's last_tick decides, so
-- a tick becomes a job once however many schedulers run.
--
-- KEYS[1] entry state hash <prefix>:{<queue>}:schedule:<name>
-- KEYS[2] job hash         <prefix>:{<queue>}:job:<name>@<tick unix s>
-- KEYS[3] pending list     <prefix>:{<queue>}:pending
-- KEYS[4] scheduled zset   <prefix>:{<queue>}:scheduled
-- KEYS[5] wake list        <prefix>:{<queue>}:wake  (also a channel)
-- KEYS[6..7], only when the entry's jobs have a unique key (see claim in
-- prelude.lua):
-- KEYS[6] unique key       <prefix>:{<queue>}:unique:<key>  (the holder's id)
-- KEYS[7] job key prefix   <prefix>:{<queue>}:job:  (the holder's hash is
--         KEYS[7] .. its id, in the same slot)
--
-- ARGV[1]  tick, Unix ms by the scheduler's clock (0 = nothing due: only
--          record the entry)
-- ARGV[2]  1 if the tick is on time (within the scheduler's grace), else 0
-- ARGV[3]  1 if missed ticks are caught up, else 0
-- ARGV[4]  next run, Unix ms
-- ARGV[5]  the scheduler's clock now, Unix ms (created_at of a new entry)
-- ARGV[6]  the state hash's time to live, ms
-- ARGV[7]  1 on a scheduler's first call for the entry (its description
--          and next_run replace the stored ones), else 0; a hash without a
--          description gets one either way
-- ARGV[8..12] name, queue, func, spec, timezone of the entry
-- ARGV[13] job id, ARGV[14] absolute ready time (Unix ms, 0 = now),
-- ARGV[15] delay (ms, 0 = none), ARGV[16] '0' (the id is the tick's),
-- ARGV[17..] job hash field, value pairs: the arguments enqueue.lua takes,
--          from the same Go code.
--
-- Returns {code, now_ms, holder, holder_status} (now_ms by Redis's clock;
-- holder and holder_status are '' unless code is 6):
--   0 = the tick is not newer than last_tick (already enqueued, or nothing
--       due); 1 = queued; 2 = scheduled (the entry delays its jobs);
--   3 = a job with the tick's id existed already (recorded as done);
--   4 = the tick was missed and is skipped; 5 = the tick is older than the
--       entry and is skipped; 6 = another job (holder) holds the unique key:
--       the tick is recorded as done with no job (last_job_id stays as it
--       was; last_held_tick and last_held_by name the tick and the holder).
-- A key of the wrong type answers an error naming it, and nothing is written.
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'hash', KEYS[2], 'hash', KEYS[3], 'list', KEYS[4], 'zset')
if not err and KEYS[6] then
  err = check(KEYS[6], 'string')
end
if err then
  return err
end
local now = now_ms()
local tick = tonumber(ARGV[1])
local nextRun = tonumber(ARGV[4])

redis.call('HSETNX', KEYS[1], 'created_at', ARGV[5])
if ARGV[7] == '1' or redis.call('HEXISTS', KEYS[1], 'spec') == 0 then
  redis.call('HSET', KEYS[1], 'name', ARGV[8], 'queue', ARGV[9], 'func', ARGV[10],
    'spec', ARGV[11], 'timezone', ARGV[12], 'next_run', nextRun)
end
local last = tonumber(redis.call('HGET', KEYS[1], 'last_tick') or '0')

local function finish(code, holder, hst)
  local stored = tonumber(redis.call('HGET', KEYS[1], 'next_run') or '0')
  if nextRun > stored then
    redis.call('HSET', KEYS[1], 'next_run', nextRun)
  end
  redis.call('PEXPIRE', KEYS[1], ARGV[6])
  return {code, now, holder or '', hst or ''}
end

if tick == 0 or tick <= last then
  return finish(0)
end
if ARGV[2] ~= '1' then
  if tonumber(redis.call('HGET', KEYS[1], 'created_at')) > tick then
    return finish(5)
  end
  if ARGV[3] ~= '1' then
    return finish(4)
  end
end

local id = ARGV[13]
if KEYS[6] and redis.call('EXISTS', KEYS[2]) == 0 then
  local holder, hst = claim(KEYS[6], KEYS[7], id)
  if holder then
    redis.call('HSET', KEYS[1], 'last_tick', tick, 'last_held_tick', tick, 'last_held_by', holder)
    return finish(6, holder, hst)
  end
end
redis.call('HSET', KEYS[1], 'last_tick', tick, 'last_job_id', id)
if redis.call('EXISTS', KEYS[2]) == 1 then
  return finish(3)
end

-- From here on as enqueue.lua.
local at = tonumber(ARGV[14])
local delay = tonumber(ARGV[15])
if delay > 0 then
  at = now + delay
end
local code = 1
if at > now then
  redis.call('HSET', KEYS[2], 'status', 'scheduled', 'created_at', now, 'scheduled_at', at, unpack(ARGV, 17))
  redis.call('ZADD', KEYS[4], at, id)
  code = 2
else
  redis.call('HSET', KEYS[2], 'status', 'queued', 'created_at', now, 'enqueued_at', now, unpack(ARGV, 17))
  redis.call('RPUSH', KEYS[3], id)
end
wake(KEYS[5])
redis.call('HSET', KEYS[1], 'last_run', now)
return finish(code)
