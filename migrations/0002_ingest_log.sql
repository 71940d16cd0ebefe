-- Provenance: every ingest attempt that reached the catalog (added, replaced, unchanged), so an
-- export manifest can say where each checkpoint came from and when it changed.
CREATE TABLE ingest_log (
    model              VARCHAR NOT NULL,
    checkpoint_sha256  VARCHAR NOT NULL,
    action             VARCHAR NOT NULL,   -- added | replaced | unchanged
    source             VARCHAR,
    adapter            VARCHAR NOT NULL,
    adapter_version    VARCHAR,
    catalog_version    VARCHAR NOT NULL,
    logged_at          TIMESTAMP NOT NULL
);
