-- Group red packets (host/src/packet/): two more entry kinds, `ps/{packet_id}` (4, the sender's
-- wallet into `packet/{packet_id}`) and `pr/{packet_id}` (5, the unclaimed shares back to the
-- sender). The packet account is a guarded account like a wallet: never below zero.
ALTER TABLE entries DROP CONSTRAINT entries_kind_check;
ALTER TABLE entries ADD CONSTRAINT entries_kind_check CHECK (kind IN (1, 2, 3, 4, 5));
