#!lua flags=allow-oom
-- delivered.lua: clear outbox entries that deliver.lua has delivered. It
-- runs when Redis is out of memory too (allow-oom): it frees memory.
--
-- KEYS[1] outbox zset     <prefix>:{<queue>}:outbox  (parent id -> when a
--         reaper delivers what it still owes, Unix ms)
--
-- ARGV[1..] pairs of parent id and dependent `<queue>:<id>`
--
-- Returns how many entries it cleared.
local err = check(KEYS[1], 'zset')
if err then
  return err
end
local base = string.sub(KEYS[1], 1, -7)
local n = 0
for i = 1, #ARGV, 2 do
  local ok = base .. 'owed:' .. ARGV[i]
  local r = redis.pcall('HDEL', ok, ARGV[i + 1])
  if r == 1 then
    n = n + 1
  end
  if redis.call('EXISTS', ok) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return n
