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
-- Returns how many jobs were requeued. Ids that are not failed or canceled
-- are left alone; ids whose hash expired leave the registries. A key of the
-- wrong type answers an error naming it, and nothing is written.
local err = check(KEYS[1], 'list', KEYS[2], 'zset', KEYS[3], 'zset')
if err then
  return err
end
local now = now_ms()
local n = 0
for _, id in ipairs(ARGV) do
  local k = KEYS[5] .. id
  local st = redis.pcall('HGET', k, 'status')
  if failed(st) then
    st = nil -- not a job: its id leaves the registries
  end
  if st == 'failed' or st == 'canceled' then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HSET', k, 'status', 'queued', 'enqueued_at', now, 'attempt', 0)
    redis.call('HDEL', k, 'ended_at', 'started_at', 'result', 'token')
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
return n
