-- When each entry was written, on the database's clock: audits of the writer's pace (the fleet
-- test checks that no second of commits holds more than the credits-per-second cap) and of
-- crediting lag. Existing rows get the time of this migration.
ALTER TABLE entries ADD COLUMN credited_at timestamptz NOT NULL DEFAULT clock_timestamp();
