-- Catalog-wide settings, one row per key. `data_root`: where the kernel and result Parquet lives
-- when it is not the catalog folder (an object-storage URI such as s3://bucket/prefix, set by
-- `catalog init --data-root`); `writer`: the writable catalog's location, named when a published
-- read-only snapshot refuses a write. A catalog without rows is local, as before this migration.
CREATE TABLE IF NOT EXISTS settings (   -- (IF NOT EXISTS: a schema_version rolled back by hand re-applies cleanly)
    key    VARCHAR PRIMARY KEY,
    value  VARCHAR NOT NULL
);
