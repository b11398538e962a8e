-- Peak sales (the waiting room): each sale's definition as its last accepted
-- `PUT /v1/admin/sales/{sale_id}`, so that recovery can put the sales not yet closed back into
-- Redis after Redis lost its data. Plain columns, one per field of the validated body (times as
-- instants, durations in seconds). The queue itself (who waits, who was admitted) lives only in
-- Redis and is not kept here. See docs/DATA.md ("Peak sales").

-- migrate:up
CREATE TABLE sales (
    id               text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    schedule_ids     text[] NOT NULL CHECK (cardinality(schedule_ids) BETWEEN 1 AND 1000),
    opens_at         timestamptz NOT NULL,
    closes_at        timestamptz NOT NULL,
    admit_per_s      integer NOT NULL CHECK (admit_per_s BETWEEN 1 AND 1000000),
    max_admitted     integer NOT NULL CHECK (max_admitted BETWEEN 1 AND 1000000),
    idle_s           integer NOT NULL CHECK (idle_s BETWEEN 1 AND 86400),
    admission_ttl_s  integer NOT NULL CHECK (admission_ttl_s BETWEEN 1 AND 86400),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (opens_at < closes_at)
);
-- recovery: the sales not yet closed
CREATE INDEX sales_closes_at_idx ON sales (closes_at);
-- a schedule reopened from Postgres: the sales that cover it
CREATE INDEX sales_schedule_ids_idx ON sales USING gin (schedule_ids);

-- migrate:down
DROP TABLE IF EXISTS sales;
