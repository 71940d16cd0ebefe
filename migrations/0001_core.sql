-- Core metadata: one row per model (checkpoint), per depthwise layer, and per kernel Parquet file
-- (the user-facing views `models`, `layers` and `kernels` are built over these in catalog/views.py).
-- Kernel values live in Parquet under kernels/model=<name>/; the `kernels` view reads exactly the
-- files listed in kernel_files, so a file is visible only once its row has committed.
CREATE TABLE model_records (
    model              VARCHAR NOT NULL,
    checkpoint_sha256  VARCHAR NOT NULL,
    adapter            VARCHAR NOT NULL,
    adapter_version    VARCHAR,
    trained            BOOLEAN NOT NULL,
    source             VARCHAR,
    n_layers           INTEGER NOT NULL,
    n_kernels          BIGINT NOT NULL,
    meta               JSON,
    ingested_at        TIMESTAMP NOT NULL
);

CREATE TABLE layer_records (
    model        VARCHAR NOT NULL,
    layer        VARCHAR NOT NULL,
    expert       INTEGER,
    layer_index  INTEGER NOT NULL,
    depth        DOUBLE NOT NULL,
    kh           INTEGER NOT NULL,
    kw           INTEGER NOT NULL,
    n_kernels    INTEGER NOT NULL,
    n_nonfinite  INTEGER NOT NULL,   -- kernels with NaN/Inf values (kept, flagged)
    n_near_zero  INTEGER NOT NULL,   -- kernels with every |w| <= 1e-4 (kept, flagged)
    meta         JSON
);

CREATE TABLE kernel_files (
    model   VARCHAR NOT NULL,
    path    VARCHAR NOT NULL,   -- relative to the catalog root
    n_rows  BIGINT NOT NULL,
    bytes   BIGINT NOT NULL
);
