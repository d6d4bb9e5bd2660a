#!lua flags=allow-oom
-- empty.lua: delete up to N queued jobs, oldest first. It runs when Redis is
-- out of memory too (allow-oom): it frees memory.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
--
-- ARGV[1] most jobs to delete in this call
--
-- Returns how many were deleted; call again until it returns 0. A pending key
-- of the wrong type answers an error naming it.
local err = check(KEYS[1], 'list')
if err then
  return err
end
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', KEYS[2] .. id)
end
if #ids > 0 then
  redis.call('LTRIM', KEYS[1], #ids, -1)
end
return #ids
