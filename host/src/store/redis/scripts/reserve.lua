-- Takes what it can of one grant's {scene count, scene cents, activity cents} from one stock
-- bucket, within the bucket's shares, and notes it under the attempt's name (`rv:ATTEMPT`).
-- Run again for the same attempt, it answers the same and takes nothing. Arguments are built
-- by `ReserveArgs` (scripts.rs) only.
--
-- KEYS[1] stock    P:{N}:st:ACTIVITY   hash: the bucket
-- ARGV[1] scene id
-- ARGV[2] scene count wanted
-- ARGV[3] scene cents wanted
-- ARGV[4] activity cents wanted
-- ARGV[5] the bucket's share of the scene count (-1: unbounded)
-- ARGV[6] the bucket's share of the scene budget, cents (-1: unbounded)
-- ARGV[7] the bucket's share of the activity budget, cents (-1: unbounded)
-- ARGV[8] the attempt's name
-- Answers {count taken, scene cents taken, activity cents taken}
local stock, scene, attempt = KEYS[1], ARGV[1], ARGV[8]
local marker = 'rv:' .. attempt
local prior = redis.call('HGET', stock, marker)
if prior then
  local t = {}
  for v in string.gmatch(prior, '[^,]+') do t[#t + 1] = tonumber(v) end
  return t
end
local scene_count_field, scene_cents_field = 's:' .. scene .. ':n', 's:' .. scene .. ':c'
local b = redis.call('HMGET', stock, scene_count_field, scene_cents_field, 'a:c')
local used = {tonumber(b[1] or '0'), tonumber(b[2] or '0'), tonumber(b[3] or '0')}
local taken = {}
for i = 1, 3 do
  local want, limit = tonumber(ARGV[1 + i]), tonumber(ARGV[4 + i])
  local take = want
  if limit >= 0 then take = math.max(0, math.min(want, limit - used[i])) end
  taken[i] = take
end
if taken[1] > 0 then redis.call('HINCRBY', stock, scene_count_field, taken[1]) end
if taken[2] > 0 then redis.call('HINCRBY', stock, scene_cents_field, taken[2]) end
if taken[3] > 0 then redis.call('HINCRBY', stock, 'a:c', taken[3]) end
if taken[1] > 0 or taken[2] > 0 or taken[3] > 0 then
  redis.call('HSET', stock, marker, string.format('%d,%d,%d', taken[1], taken[2], taken[3]))
end
return taken
