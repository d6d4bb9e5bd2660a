#!lua flags=allow-oom
-- empty.lua: delete up to N queued jobs, oldest first. It runs when Redis is
-- out of memory too (allow-oom): it frees memory.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
--
-- ARGV[1] most jobs to delete in this call: the queued jobs, then those
--         parked for their limit keys
--
-- Returns {deleted, owing}: how many were deleted (call again until it is
-- 0), and the ids of those whose ends are owed to dependents in other
-- queues (see ended in prelude.lua). A pending key
-- of the wrong type answers an error naming it.
lazy() -- the helpers defined on demand (prelude.lua)
local err = check(KEYS[1], 'list')
if err then
  return err
end
local base = string.sub(KEYS[2], 1, -5)
err = check_deps(base)
if err then
  return err
end
local now = now_ms()
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids > 0 then
  redis.call('LTRIM', KEYS[1], #ids, -1)
end
-- Then the jobs parked for their limit keys (see dequeue.lua).
if #ids < tonumber(ARGV[1]) and redis.call('TYPE', base .. 'parked').ok == 'zset' then
  for _, id in ipairs(redis.call('ZRANGE', base .. 'parked', 0, tonumber(ARGV[1]) - #ids - 1)) do
    local lk = redis.pcall('HGET', KEYS[2] .. id, 'limit_key')
    if type(lk) == 'string' then
      unpark(base, id, lk)
    else
      redis.call('ZREM', base .. 'parked', id)
    end
    ids[#ids + 1] = id
  end
end
local owing = {}
for _, id in ipairs(ids) do
  local fl = redis.pcall('HGET', KEYS[2] .. id, 'flags')
  if type(fl) ~= 'string' or fl == '' then
    fl = false -- a plain job, or not a job
  end
  local d, w, u, uf, c
  if fl then
    d, w, u, uf, c = extras(KEYS[2] .. id, fl)
  end
  redis.call('DEL', KEYS[2] .. id)
  -- Dependents of a deleted job are canceled; waiters find it gone.
  if fl and ended(base, id, 'gone', d, w, now, nil, u, uf, c) then
    owing[#owing + 1] = id
  end
end
return {#ids, owing}
