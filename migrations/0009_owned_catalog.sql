-- A catalog file is data, never code (README "Security"): the views are no longer stored in it but
-- built by the code on every connection (store.views), so a catalog from someone else runs none of
-- its own SQL. A catalog knows itself by an id, also written in the marker files at its folder and
-- its data root (store._owned); each data file records its SHA-256 for `catalog verify`
-- (NULL for files written before this migration: verify checks their size only).
DROP VIEW IF EXISTS kernels;
DROP VIEW IF EXISTS embeddings;
DROP VIEW IF EXISTS labels;
DROP VIEW IF EXISTS runs;
DROP VIEW IF EXISTS clusters;
DROP VIEW IF EXISTS models;
DROP VIEW IF EXISTS layers;
INSERT OR IGNORE INTO settings VALUES ('catalog_id', uuid()::VARCHAR);
ALTER TABLE kernel_files ADD COLUMN sha256 VARCHAR;
ALTER TABLE result_files ADD COLUMN sha256 VARCHAR;
