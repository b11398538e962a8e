-- Sales: bookings, passengers, tickets (with the legs each covers), payments, refunds,
-- promotions. The exclusion constraint on tickets is the database's own guarantee that a
-- seat-leg is never sold twice, whatever Redis says.

-- migrate:up
CREATE EXTENSION IF NOT EXISTS btree_gist;

CREATE TYPE booking_status AS ENUM ('pending', 'confirmed', 'cancelled', 'completed');
CREATE TYPE passenger_type AS ENUM ('adult', 'child', 'infant', 'senior');
CREATE TYPE payment_method AS ENUM ('credit_card', 'debit_card', 'wallet', 'bank_transfer', 'qris');
CREATE TYPE payment_status AS ENUM ('pending', 'processing', 'completed', 'failed', 'refunded');
CREATE TYPE refund_reason AS ENUM ('cancellation', 'schedule_change', 'system_error');
CREATE TYPE refund_status AS ENUM ('initiated', 'processing', 'completed', 'failed');
CREATE TYPE ticket_status AS ENUM ('active', 'used', 'cancelled', 'expired');
CREATE TYPE discount_type AS ENUM ('percentage', 'fixed_amount');

CREATE TABLE bookings (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_number   text NOT NULL UNIQUE,
    hold_id          text NOT NULL UNIQUE,
    user_id          text NOT NULL REFERENCES users (id),
    schedule_id      text NOT NULL REFERENCES schedules (id),
    from_index       smallint NOT NULL,
    to_index         smallint NOT NULL,
    from_station     text NOT NULL,
    to_station       text NOT NULL,
    status           booking_status NOT NULL DEFAULT 'confirmed',
    total_amount     numeric(14, 2) NOT NULL DEFAULT 0,
    discount_amount  numeric(14, 2) NOT NULL DEFAULT 0,
    final_amount     numeric(14, 2) NOT NULL DEFAULT 0,
    passenger_count  integer NOT NULL CHECK (passenger_count > 0),
    booking_details  jsonb NOT NULL DEFAULT '{}'::jsonb,
    booking_date     timestamptz NOT NULL DEFAULT now(),
    cancelled_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (from_index >= 0 AND from_index < to_index)
);
CREATE INDEX bookings_user_id_idx ON bookings (user_id);
CREATE INDEX bookings_schedule_id_idx ON bookings (schedule_id);
-- reconcile: bookings changed since the last pass
CREATE INDEX bookings_updated_at_idx ON bookings (updated_at);

CREATE TABLE passengers (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id            bigint NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    passenger_name        text NOT NULL,
    passenger_dob         date,
    passenger_type        passenger_type NOT NULL DEFAULT 'adult',
    identity_number       text NOT NULL,
    gender                gender,
    seat_id               bigint NOT NULL REFERENCES seats (id),
    ticket_price          numeric(14, 2) NOT NULL DEFAULT 0,
    special_requirements  jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX passengers_booking_id_idx ON passengers (booking_id);
CREATE INDEX passengers_seat_id_idx ON passengers (seat_id);

CREATE TABLE tickets (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id     bigint NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    passenger_id   bigint NOT NULL UNIQUE REFERENCES passengers (id) ON DELETE CASCADE,
    schedule_id    text NOT NULL REFERENCES schedules (id),
    seat_id        bigint NOT NULL REFERENCES seats (id),
    from_index     smallint NOT NULL,
    to_index       smallint NOT NULL,
    legs           int4range GENERATED ALWAYS AS (int4range(from_index, to_index, '[)')) STORED,
    ticket_number  text NOT NULL UNIQUE,
    qr_code        text NOT NULL,
    ticket_status  ticket_status NOT NULL DEFAULT 'active',
    check_in_time  timestamptz,
    checked_in_by  text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (from_index >= 0 AND from_index < to_index),
    -- one seat-leg, one live ticket: legs are half-open [from, to), so A->B and B->C coexist
    CONSTRAINT tickets_no_double_sale EXCLUDE USING gist (
        schedule_id WITH =, seat_id WITH =, legs WITH &&
    ) WHERE (ticket_status <> 'cancelled')
);
CREATE INDEX tickets_booking_id_idx ON tickets (booking_id);
CREATE INDEX tickets_seat_id_idx ON tickets (seat_id);
-- rebuild: the live tickets of a schedule
CREATE INDEX tickets_schedule_live_idx ON tickets (schedule_id) WHERE ticket_status <> 'cancelled';

CREATE TABLE payments (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id         bigint NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    payment_reference  text NOT NULL,
    payment_method     payment_method NOT NULL,
    payment_status     payment_status NOT NULL DEFAULT 'completed',
    amount             numeric(14, 2) NOT NULL CHECK (amount >= 0),
    processing_fee     numeric(14, 2) NOT NULL DEFAULT 0,
    gateway_response   text,
    payment_date       timestamptz NOT NULL DEFAULT now(),
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payments_booking_id_idx ON payments (booking_id);

CREATE TABLE refunds (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id        bigint NOT NULL REFERENCES payments (id) ON DELETE CASCADE,
    refund_reference  text NOT NULL UNIQUE,
    refund_reason     refund_reason NOT NULL DEFAULT 'cancellation',
    refund_amount     numeric(14, 2) NOT NULL CHECK (refund_amount >= 0),
    processing_fee    numeric(14, 2) NOT NULL DEFAULT 0,
    refund_status     refund_status NOT NULL DEFAULT 'initiated',
    refund_method     text,
    refund_date       timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_payment_id_idx ON refunds (payment_id);

CREATE TABLE promotions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    promotion_code    text NOT NULL UNIQUE,
    promotion_name    text NOT NULL,
    discount_type     discount_type NOT NULL,
    discount_value    numeric(14, 2) NOT NULL CHECK (discount_value >= 0),
    minimum_amount    numeric(14, 2) NOT NULL DEFAULT 0,
    maximum_discount  numeric(14, 2),
    valid_from        date NOT NULL,
    valid_to          date NOT NULL,
    usage_limit       integer,
    used_count        integer NOT NULL DEFAULT 0,
    is_active         boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CHECK (valid_from <= valid_to)
);

CREATE TABLE booking_promotions (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    booking_id        bigint NOT NULL REFERENCES bookings (id) ON DELETE CASCADE,
    promotion_id      bigint NOT NULL REFERENCES promotions (id),
    discount_applied  numeric(14, 2) NOT NULL DEFAULT 0,
    applied_at        timestamptz NOT NULL DEFAULT now(),
    UNIQUE (booking_id, promotion_id)
);
CREATE INDEX booking_promotions_promotion_id_idx ON booking_promotions (promotion_id);

-- migrate:down
DROP TABLE IF EXISTS booking_promotions;
DROP TABLE IF EXISTS promotions;
DROP TABLE IF EXISTS refunds;
DROP TABLE IF EXISTS payments;
DROP TABLE IF EXISTS tickets;
DROP TABLE IF EXISTS passengers;
DROP TABLE IF EXISTS bookings;
DROP TYPE IF EXISTS discount_type;
DROP TYPE IF EXISTS ticket_status;
DROP TYPE IF EXISTS refund_status;
DROP TYPE IF EXISTS refund_reason;
DROP TYPE IF EXISTS payment_status;
DROP TYPE IF EXISTS payment_method;
DROP TYPE IF EXISTS passenger_type;
DROP TYPE IF EXISTS booking_status;
DROP EXTENSION IF EXISTS btree_gist;
