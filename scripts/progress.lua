-- progress.lua: store what running attempts of one queue report
-- (progress.go): their progress, or one named value each. Only an attempt
-- that holds its lease may: its token must be its job's, and the job
-- active.
--
-- KEYS[1] active zset      <prefix>:{<queue>}:active
-- KEYS[2] job key prefix   <prefix>:{<queue>}:job:  (plus the id: same hash tag)
--
-- ARGV[1..] job id, attempt token, field (progress, or meta:<name>), JSON
--           value: one quadruple per report
--
-- Returns one code per report, in order: 1 = stored, 0 = the token is stale
-- or the job's key damaged (nothing written for it). A damaged active set
-- answers an error naming it, and nothing is written.
local err = check(KEYS[1], 'zset')
if err then
  return err
end
local out = {}
for i = 1, #ARGV, 4 do
  local k = KEYS[2] .. ARGV[i]
  local tok = redis.pcall('HGET', k, 'token')
  if tok == ARGV[i + 1] and redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('HSET', k, ARGV[i + 2], ARGV[i + 3])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
