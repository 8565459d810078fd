-- Signing secrets sealed at rest (AES-256-GCM under WEBHOOK_SECRETS_KEY, issue 29). SQL cannot
-- seal (the key is the service's), so rows an earlier release wrote keep their secret in
-- signature_secret until the service seals them right after this migration; new rows carry
-- only sealed_secret.
ALTER TABLE webhooks ADD COLUMN sealed_secret bytea;
ALTER TABLE webhooks ALTER COLUMN signature_secret DROP NOT NULL;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_secret_present
    CHECK (sealed_secret IS NOT NULL OR signature_secret IS NOT NULL);
