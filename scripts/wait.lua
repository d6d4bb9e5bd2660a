#!lua
-- wait.lua: read a job that has ended, or ask to be told when it ends.
--
-- KEYS[1] job hash        <prefix>:{<queue>}:job:<id>
--
-- Returns {0} when there is no such job, {1, field, value, ...} (the whole
-- hash) when it has ended (finished, failed or canceled), else {2}, after
-- adding w to the hash's flags (see flag in prelude.lua): the script that
-- ends the job then
-- publishes its id on the channel <prefix>:{<queue>}:ended. A waiter
-- subscribes before it calls this, so no end falls between the two.
lazy() -- the helpers defined on demand (prelude.lua)
local t = redis.call('TYPE', KEYS[1]).ok
if t == 'none' then
  return {0}
elseif t ~= 'hash' then
  return bad(KEYS[1], 'hash')
end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'finished' or st == 'failed' or st == 'canceled' then
  local out = redis.call('HGETALL', KEYS[1])
  table.insert(out, 1, 1)
  return out
end
flag(KEYS[1], 'w')
return {2}
