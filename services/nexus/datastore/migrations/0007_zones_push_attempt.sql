-- When nexus last tried to push each sled its zones config, whatever came
-- of it (Z9). Refresh pushes go to the sleds tried longest ago: ordered by
-- the last push the sled took instead, a sled that no longer answers
-- stayed first in line for ever and took the refresh share of every pass.
ALTER TABLE sled_zones ADD COLUMN time_push_attempted TIMESTAMPTZ;
UPDATE sled_zones SET time_push_attempted = time_pushed;
