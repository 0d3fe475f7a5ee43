-- Retires a shard's credited records whose retention has passed (by Redis's clock): each
-- record leaves with every index of it (the user's token list, the activity's grants), its
-- count and cents join the activity's retired totals, and its user joins the activity's
-- retired users. The stock it used stays counted. Arguments are built by `RetireArgs`
-- (scripts.rs) only.
--
-- KEYS[1] credited  P:{N}:cr   zset: member (ACTIVITY/ORDER_NO) by credit time, ms
-- ARGV[1] shard tag, P:{N}
-- ARGV[2] retention, ms
-- ARGV[3] the most records to retire
-- ARGV[4] shard count (for the retired users' bucket)
-- ARGV[5] retired users' buckets per shard and activity
-- Answers {retired, due seen}
local credited = KEYS[1]
local tag, retain_ms, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local shards, buckets = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', credited, '-inf', now - retain_ms, 'LIMIT', 0, max)
local n = 0
for _, m in ipairs(due) do
  local g = tag .. ':g:' .. m
  local stored = stored_record(g)
  local v = {}
  if stored then v = {string.match(stored, '^(%d)(%d+)|(-?%d+)|([^|]*)|(-?%d+)|')} end
  local activity = string.match(m, '^([^/]+)/')
  if v[1] == '8' and v[3] and activity then
    redis.call('DEL', g)
    redis.call('ZREM', tag .. ':ut:' .. v[3], 'rp/' .. m)
    redis.call('XDEL', tag .. ':ga:' .. activity, v[2] .. '-0')
    -- Earlier versions indexed the activity's grants in a zset.
    redis.call('ZREM', tag .. ':ag:' .. activity, m)
    local totals = tag .. ':rr:' .. activity
    redis.call('HINCRBY', totals, 's:' .. v[4] .. ':n', 1)
    redis.call('HINCRBY', totals, 's:' .. v[4] .. ':c', v[5])
    local digits = string.sub((string.gsub(v[3], '-', '')), -6)
    local bucket = math.floor(tonumber(digits) / shards) % buckets
    redis.call('SADD', tag .. ':rx:' .. activity .. ':' .. bucket, v[3])
    n = n + 1
  end
  redis.call('ZREM', credited, m)
end
return {n, #due}
