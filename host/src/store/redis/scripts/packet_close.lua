-- Closes a group red packet for its refund (no claim succeeds after this) and answers its
-- final claims. Arguments: `PacketCloseArgs`.
--
-- KEYS[1] state   P:{pk.ID}:s   hash: closed, refund
-- KEYS[2] claims  P:{pk.ID}:c   hash: actID -> share index
-- Answers the claims as a flat list {actID, index, actID, index, …}
redis.call('HSET', KEYS[1], 'closed', '1')
return redis.call('HGETALL', KEYS[2])
