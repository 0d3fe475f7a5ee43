-- Completes credited tokens: status 8, off the parked set and the queue, and into the shard's
-- credited set `TAG:cr` (scored by Redis's clock) to wait out their retention. Arguments are
-- built by `EntriesArgs` (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q
-- KEYS[2] parked   P:{N}:pk
-- ARGV[1] consumer group
-- ARGV[2] shard tag, P:{N}
-- ARGV[3], ARGV[4], ARGV[5], …  (member, seq, queue id) triples
-- Answers how many tokens moved to credited
local queue, parked = KEYS[1], KEYS[2]
local group, tag = ARGV[1], ARGV[2]
local n = 0
local credited, members, acknowledged = {}, {}, {}
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 3, #ARGV, 3 do
  local m, qid = ARGV[i], ARGV[i + 2]
  local g = tag .. ':g:' .. m
  local v = stored_record(g)
  if v and string.sub(v, 1, 1) ~= '8' then
    redis.call('SETRANGE', g, 0, '8')
    credited[#credited + 1] = now
    credited[#credited + 1] = m
    n = n + 1
  end
  members[#members + 1] = m
  if qid ~= '' then acknowledged[#acknowledged + 1] = qid end
end
call_many({'ZADD', tag .. ':cr'}, credited)
-- Parked tokens are rare (the ledger refused them): most batches find the set empty.
if redis.call('EXISTS', parked) == 1 then call_many({'ZREM', parked}, members) end
call_many({'XACK', queue, group}, acknowledged)
drop_acknowledged(queue, group, acknowledged)
return n
