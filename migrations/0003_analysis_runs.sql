-- Analysis runs (embed, cluster/identify) and the result files they append. Results never touch
-- kernel files: they are Parquet datasets keyed by (run, kernel_id), exposed by the views
-- `embeddings` and `labels`; per-cluster summaries are small and live in cluster_records.
CREATE TABLE run_records (
    run           VARCHAR NOT NULL,
    kind          VARCHAR NOT NULL,     -- embed | cluster
    parent        VARCHAR,              -- the run this one read (cluster <- embed)
    selection     VARCHAR,              -- the SQL WHERE over `kernels` that chose the input
    params        JSON NOT NULL,
    metrics       JSON,
    code_version  VARCHAR NOT NULL,
    device        VARCHAR,
    created_at    TIMESTAMP NOT NULL,
    seconds       DOUBLE
);

CREATE TABLE result_files (
    run     VARCHAR NOT NULL,
    kind    VARCHAR NOT NULL,           -- embeddings | labels | autoencoder
    path    VARCHAR NOT NULL,           -- relative to the catalog root
    n_rows  BIGINT,
    bytes   BIGINT NOT NULL
);

CREATE TABLE cluster_records (
    run          VARCHAR NOT NULL,
    kh           INTEGER NOT NULL,
    kw           INTEGER NOT NULL,
    cluster      INTEGER NOT NULL,
    label        VARCHAR NOT NULL,      -- best template family, or 'unmatched'
    template     VARCHAR,               -- best template variant
    score        DOUBLE,                -- cosine of the cluster mean with that template
    n_kernels    BIGINT NOT NULL,
    share        DOUBLE NOT NULL,       -- of this run's kernels of this size
    mean_kernel  FLOAT[] NOT NULL,      -- preprocessed mean, row-major
    medoid_kernel_id BIGINT
);
