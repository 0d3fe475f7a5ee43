-- Stores a group red packet once, with the claims already known (a packet rebuilt from the
-- ledger after the store lost it), atomically in the packet's slot: nobody claims in between.
-- Arguments: `PacketCreateArgs`.
--
-- KEYS[1] def     P:{pk.ID}:d   string: the definition (protobuf)
-- KEYS[2] claims  P:{pk.ID}:c   hash: actID -> share index
-- ARGV[1] the definition
-- ARGV[2…] the actIDs holding shares 0, 1, … in order
-- Answers the stored definition (the earlier one if the packet was stored already)
local def, claims = KEYS[1], KEYS[2]
if redis.call('SET', def, ARGV[1], 'NX') then
  for i = 2, #ARGV do
    redis.call('HSET', claims, ARGV[i], i - 2)
  end
  return ARGV[1]
end
return redis.call('GET', def)
