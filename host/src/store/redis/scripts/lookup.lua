-- One grant's record. Arguments are built by `LookupArgs` (scripts.rs) only.
--
-- KEYS[1] record   P:{N}:g:ACTIVITY/ORDER_NO
-- Answers the stored record, or nil
return stored_record(KEYS[1])
