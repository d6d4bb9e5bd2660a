#!lua flags=allow-oom
-- extend.lua: renew the leases of a worker's running jobs in one queue. It
-- runs when Redis is out of memory too (allow-oom): a renewal adds nothing.
--
-- KEYS[1] active zset     <prefix>:{<queue>}:active
-- KEYS[2] job key prefix  <prefix>:{<queue>}:job:  (plus the id: same hash tag)
--
-- ARGV[1] lease, ms
-- ARGV[2..] job id, attempt token pairs
--
-- Returns the tokens of the attempts whose lease is lost (token replaced or
-- no longer active, or expired under a cap): the worker must stop those
-- handlers and write nothing for them; and "c:<token>" for each renewed
-- attempt whose job a cancel was asked for (cancel.lua): the worker cancels
-- its handler, and records its outcome. (Tokens, not ids: a worker may hold a stale attempt and a new one
-- of the same job.)
local err = check(KEYS[1], 'zset')
if err then
  return err
end
local now = now_ms()
local deadline = now + tonumber(ARGV[1])
-- Under a Concurrency or KeyConcurrency (the flow hash, see dequeue.lua) a
-- lease that has expired is lost even before a reaper takes the job: its
-- slot may have gone to another job.
local base = string.sub(KEYS[2], 1, -5)
local caps = redis.pcall('HMGET', base .. 'flow', 'concurrency', 'key_concurrency')
local strict = type(caps) == 'table' and not caps.err and (caps[1] or caps[2]) and true
local lost = {}
for i = 2, #ARGV, 2 do
  local id = ARGV[i]
  local k = KEYS[2] .. id
  -- A key that is no longer a hash (damaged by hand) loses its own lease
  -- without raising an error that would fail every other job's renewal.
  local h = redis.call('TYPE', k).ok == 'hash' and redis.call('HMGET', k, 'token', 'flags')
  local d = h and h[1] == ARGV[i + 1] and tonumber(redis.call('ZSCORE', KEYS[1], id))
  if d and (not strict or d > now) then
    redis.call('ZADD', KEYS[1], 'XX', deadline, id)
    if caps[1] then
      -- A job held ahead of the Concurrency stays ahead (dequeue.lua).
      redis.pcall('ZADD', base .. 'ahead', 'XX', deadline, id)
    end
    if h[2] and string.find(h[2], 'c', 1, true) then
      lost[#lost + 1] = 'c:' .. ARGV[i + 1] -- a cancel was asked (cancel.lua)
    end
  else
    lost[#lost + 1] = ARGV[i + 1]
  end
end
return lost
