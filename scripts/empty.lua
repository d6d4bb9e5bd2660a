-- empty.lua: delete up to N queued jobs, oldest first.
--
-- KEYS[1] pending list    <prefix>:{<queue>}:pending
-- KEYS[2] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
--
-- ARGV[1] most jobs to delete in this call
--
-- Returns how many were deleted; call again until it returns 0.
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', KEYS[2] .. id)
end
if #ids > 0 then
  redis.call('LTRIM', KEYS[1], #ids, -1)
end
return #ids
