-- A principal's tokens: GET /v1/me reads its first one (PrincipalSince) and
-- /v1/me/access-tokens lists them, on every call; without this index both
-- read every token ever minted.
CREATE INDEX api_token_by_principal ON api_token (principal, time_created);
