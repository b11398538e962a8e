-- Catalogue: stations, trains and their classes and seats, routes, schedules and their stops.
-- Ids: text where the outside world names the row (schedules.id is the contract's schedule_id),
-- bigint identities elsewhere. See docs/DATA.md for where and why this departs from the ERD.

-- migrate:up
CREATE TYPE train_type AS ENUM ('express', 'local', 'high_speed');
CREATE TYPE class_type AS ENUM ('executive', 'business', 'economy', 'sleeper');
CREATE TYPE seat_type AS ENUM ('window', 'aisle', 'middle');
CREATE TYPE schedule_status AS ENUM ('scheduled', 'delayed', 'cancelled', 'completed');

CREATE TABLE stations (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    station_code  text NOT NULL UNIQUE CHECK (station_code ~ '^[A-Z]{2,5}$'),
    station_name  text NOT NULL,
    city          text,
    province      text,
    latitude      numeric(9, 6),
    longitude     numeric(9, 6),
    facilities    jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE trains (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    train_number    text NOT NULL UNIQUE,
    train_name      text NOT NULL,
    train_type      train_type NOT NULL DEFAULT 'express',
    total_capacity  integer NOT NULL DEFAULT 0 CHECK (total_capacity >= 0),
    facilities      jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_active       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE train_classes (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    train_id      bigint NOT NULL REFERENCES trains (id) ON DELETE CASCADE,
    class_type    class_type NOT NULL,
    capacity      integer NOT NULL DEFAULT 0 CHECK (capacity >= 0),
    base_price    numeric(14, 2) NOT NULL DEFAULT 0 CHECK (base_price >= 0),
    amenities     jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_available  boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (train_id, class_type)
);

-- Every seat the train has ever been sold with (the union of its schedules' coaches); a
-- schedule's own composition is schedules.coaches. Seat rows are never deleted while a ticket
-- refers to them.
CREATE TABLE seats (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    train_id       bigint NOT NULL REFERENCES trains (id) ON DELETE CASCADE,
    class_id       bigint NOT NULL REFERENCES train_classes (id),
    seat_number    text NOT NULL CHECK (seat_number ~ '^[A-Za-z0-9]{1,8}$'),
    seat_type      seat_type,
    car_number     integer NOT NULL CHECK (car_number BETWEEN 1 AND 999),
    seat_features  jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_accessible  boolean NOT NULL DEFAULT false,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (train_id, car_number, seat_number)
);
CREATE INDEX seats_class_id_idx ON seats (class_id);

-- A route is a distinct sequence of stations (its stops_key, "GMR,CN,YK").
CREATE TABLE routes (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route_name              text NOT NULL,
    stops_key               text NOT NULL UNIQUE,
    origin_station_id       bigint NOT NULL REFERENCES stations (id),
    destination_station_id  bigint NOT NULL REFERENCES stations (id),
    distance                numeric(8, 1),
    estimated_duration      integer,
    is_active               boolean NOT NULL DEFAULT true,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routes_origin_station_id_idx ON routes (origin_station_id);
CREATE INDEX routes_destination_station_id_idx ON routes (destination_station_id);

CREATE TABLE route_stations (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    route_id          bigint NOT NULL REFERENCES routes (id) ON DELETE CASCADE,
    station_id        bigint NOT NULL REFERENCES stations (id),
    station_order     integer NOT NULL CHECK (station_order >= 0),
    arrival_offset    integer,
    departure_offset  integer,
    is_stop           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (route_id, station_order)
);
CREATE INDEX route_stations_station_id_idx ON route_stations (station_id);

CREATE TABLE schedules (
    id              text PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9_-]{1,64}$'),
    train_id        bigint NOT NULL REFERENCES trains (id),
    route_id        bigint NOT NULL REFERENCES routes (id),
    departure_date  date NOT NULL,
    departure_time  time NOT NULL,
    arrival_time    time NOT NULL,
    arrival_day     smallint NOT NULL DEFAULT 0 CHECK (arrival_day BETWEEN 0 AND 7),
    departs_at      timestamptz NOT NULL,
    status          schedule_status NOT NULL DEFAULT 'scheduled',
    delay_reason    text,
    delay_minutes   integer NOT NULL DEFAULT 0 CHECK (delay_minutes >= 0),
    coaches         jsonb NOT NULL,
    definition      jsonb NOT NULL,
    layout_hash     text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_departure_date_idx ON schedules (departure_date);
CREATE INDEX schedules_train_id_idx ON schedules (train_id);
CREATE INDEX schedules_route_id_idx ON schedules (route_id);

-- The stops of one schedule with their times: what the engine needs and the ERD lacks.
-- service_date is the local date of the train's departure from this stop (its arrival for the
-- last stop), the date a passenger searches by.
CREATE TABLE schedule_stops (
    schedule_id     text NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    stop_index      smallint NOT NULL CHECK (stop_index >= 0),
    station_id      bigint NOT NULL REFERENCES stations (id),
    arrival_time    time,
    departure_time  time,
    day_offset      smallint NOT NULL DEFAULT 0 CHECK (day_offset BETWEEN 0 AND 7),
    service_date    date NOT NULL,
    arrives_at      timestamptz,
    departs_at      timestamptz,
    PRIMARY KEY (schedule_id, stop_index),
    UNIQUE (schedule_id, station_id)
);
-- search: the from stop by station and date
CREATE INDEX schedule_stops_station_date_idx
    ON schedule_stops (station_id, service_date) INCLUDE (schedule_id, stop_index);

-- migrate:down
DROP TABLE IF EXISTS schedule_stops;
DROP TABLE IF EXISTS schedules;
DROP TABLE IF EXISTS route_stations;
DROP TABLE IF EXISTS routes;
DROP TABLE IF EXISTS seats;
DROP TABLE IF EXISTS train_classes;
DROP TABLE IF EXISTS trains;
DROP TABLE IF EXISTS stations;
DROP TYPE IF EXISTS schedule_status;
DROP TYPE IF EXISTS seat_type;
DROP TYPE IF EXISTS class_type;
DROP TYPE IF EXISTS train_type;
