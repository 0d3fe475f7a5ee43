-- Gives back what reserve.lua took for an attempt, once: the attempt's name goes with it.
-- Arguments are built by `ReleaseArgs` (scripts.rs) only.
--
-- KEYS[1] stock    P:{N}:st:ACTIVITY   hash: the bucket
-- ARGV[1] scene id
-- ARGV[2] the attempt's name
-- Answers 1 when something was given back, 0 when the attempt held nothing here
local stock, scene, attempt = KEYS[1], ARGV[1], ARGV[2]
local marker = 'rv:' .. attempt
local prior = redis.call('HGET', stock, marker)
if not prior then return 0 end
local fields = {'s:' .. scene .. ':n', 's:' .. scene .. ':c', 'a:c'}
local i = 0
for v in string.gmatch(prior, '[^,]+') do
  i = i + 1
  if tonumber(v) > 0 then redis.call('HINCRBY', stock, fields[i], '-' .. v) end
end
redis.call('HDEL', stock, marker)
return 1
