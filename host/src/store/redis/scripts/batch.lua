-- Prepended to every script after queue.lua (scripts.rs): one command over a batch's items.
--
-- call_many(args, items): redis.call with the arguments `args` and then `items`, in calls of
-- at most 512 items each (Lua's `unpack` stops at ≈ 8,000 values), nothing when `items` is
-- empty. A writer's batch then costs one ZADD, ZREM or XACK instead of one an entry: each call
-- from a script costs Redis ≈ 0.6 µs of its own besides the command's work (BENCHMARKS.md).
-- Items that go in pairs (a zset's score and member) stay whole: 512 is even.
local function call_many(args, items)
  for i = 1, #items, 512 do
    local call = {unpack(args)}
    for j = i, math.min(i + 511, #items) do call[#call + 1] = items[j] end
    redis.call(unpack(call))
  end
end
