-- progress.lua: store what a running attempt reports (progress.go): its
-- progress, or one named value. Only the attempt that holds the lease may:
-- the token must be the job's and the job active.
--
-- KEYS[1] job hash     <prefix>:{<queue>}:job:<id>
-- KEYS[2] active zset  <prefix>:{<queue>}:active
--
-- ARGV[1] job id
-- ARGV[2] attempt token the worker was given
-- ARGV[3] field: progress, or meta:<name>
-- ARGV[4] JSON value
--
-- Returns 1, or 0 when the token is stale (nothing written). A key of the
-- wrong type answers an error naming it.
local err = check(KEYS[1], 'hash', KEYS[2], 'zset')
if err then
  return err
end
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[2] or not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
return 1
