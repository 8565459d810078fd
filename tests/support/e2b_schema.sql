-- The part of E2B's schema the emitter reads, as e2b-dev/infra's migrations leave it
-- (packages/db/migrations: 20231124185944_create_schemas_and_tables.sql for teams and
-- team_api_keys, 20240106121919_add_team_ban_fields.sql for is_banned/blocked_reason,
-- 20241121225404_add_team_api_key_id.sql for the id, 20250211160814_add_token_hashes.sql and
-- 20250606204750_optimize_hashed_key_schema.sql for the hash and mask columns,
-- 20250910124212_remove_raw_keys.sql for dropping the raw key). Columns the emitter never reads
-- (tier foreign keys, users, slugs) are left out.
CREATE TABLE public.teams
(
    id             uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    is_blocked     boolean     NOT NULL DEFAULT FALSE,
    name           text        NOT NULL,
    tier           text        NOT NULL,
    email          character varying(255) NOT NULL,
    is_banned      boolean     NOT NULL DEFAULT false,
    blocked_reason text        NULL
);

CREATE TABLE public.team_api_keys
(
    id                  uuid        NOT NULL DEFAULT gen_random_uuid() PRIMARY KEY,
    created_at          timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP,
    team_id             uuid        NOT NULL REFERENCES public.teams (id) ON DELETE CASCADE,
    updated_at          timestamptz NULL,
    name                text        NOT NULL DEFAULT 'Unnamed API Key',
    last_used           timestamptz NULL,
    api_key_hash        text        NOT NULL UNIQUE,
    api_key_prefix      varchar(10) NOT NULL,
    api_key_length      integer     NOT NULL,
    api_key_mask_prefix varchar(5)  NOT NULL,
    api_key_mask_suffix varchar(5)  NOT NULL
);

CREATE INDEX idx_team_team_api_keys ON public.team_api_keys (team_id);
