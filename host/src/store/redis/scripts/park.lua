-- Parks tokens the ledger refused: into the parked set, their queue entries acknowledged and
-- dropped (they stay unsettled and owed). Arguments are built by `EntriesArgs` (scripts.rs) only.
--
-- KEYS[1] queue    P:{N}:q
-- KEYS[2] parked   P:{N}:pk
-- ARGV[1] consumer group
-- ARGV[2] shard tag, P:{N}
-- ARGV[3], ARGV[4], ARGV[5], …  (member, seq, queue id) triples
-- Answers how many tokens were parked
local queue, parked = KEYS[1], KEYS[2]
local group, tag = ARGV[1], ARGV[2]
local n = 0
local scored, acknowledged = {}, {}
for i = 3, #ARGV, 3 do
  local m, seq, qid = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local v = stored_record(tag .. ':g:' .. m)
  if v and string.sub(v, 1, 1) ~= '8' then
    scored[#scored + 1] = seq
    scored[#scored + 1] = m
    n = n + 1
  end
  if qid ~= '' then acknowledged[#acknowledged + 1] = qid end
end
call_many({'ZADD', parked}, scored)
call_many({'XACK', queue, group}, acknowledged)
drop_acknowledged(queue, group, acknowledged)
return n
