-- Users and what hangs off them: profiles, sessions, notifications, the audit log.
-- users.id is the token's `sub`: a bookings row upserts its user on first sight, so email,
-- password_hash and full_name are nullable (identity lives with the token issuer).

-- migrate:up
CREATE TYPE gender AS ENUM ('male', 'female', 'other');
CREATE TYPE audit_action AS ENUM ('create', 'update', 'delete', 'view');
CREATE TYPE notification_type AS ENUM ('booking', 'payment', 'schedule', 'promotion');

CREATE TABLE users (
    id             text PRIMARY KEY CHECK (length(id) BETWEEN 1 AND 200),
    email          text,
    password_hash  text,
    full_name      text,
    phone_number   text,
    date_of_birth  date,
    gender         gender,
    is_verified    boolean NOT NULL DEFAULT false,
    is_active      boolean NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    last_login     timestamptz
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email)) WHERE email IS NOT NULL;

CREATE TABLE user_profiles (
    id                       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id                  text NOT NULL UNIQUE REFERENCES users (id) ON DELETE CASCADE,
    profile_picture          text,
    address                  text,
    city                     text,
    province                 text,
    postal_code              text,
    emergency_contact_name   text,
    emergency_contact_phone  text,
    preferences              jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE user_sessions (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id        text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_token  text NOT NULL UNIQUE,
    ip_address     inet,
    user_agent     text,
    login_time     timestamptz NOT NULL DEFAULT now(),
    last_activity  timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL,
    is_active      boolean NOT NULL DEFAULT true
);
CREATE INDEX user_sessions_user_id_idx ON user_sessions (user_id);

CREATE TABLE audit_logs (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id      text REFERENCES users (id) ON DELETE SET NULL,
    entity_type  text NOT NULL,
    entity_id    text NOT NULL,
    action       audit_action NOT NULL,
    old_values   jsonb,
    new_values   jsonb,
    ip_address   inet,
    user_agent   text,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_logs_entity_idx ON audit_logs (entity_type, entity_id);
CREATE INDEX audit_logs_user_id_idx ON audit_logs (user_id);

CREATE TABLE notifications (
    id                 bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id            text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    notification_type  notification_type NOT NULL,
    title              text NOT NULL,
    message            text NOT NULL,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_read            boolean NOT NULL DEFAULT false,
    sent_at            timestamptz,
    read_at            timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_id_idx ON notifications (user_id);

-- migrate:down
DROP TABLE IF EXISTS notifications;
DROP TABLE IF EXISTS audit_logs;
DROP TABLE IF EXISTS user_sessions;
DROP TABLE IF EXISTS user_profiles;
DROP TABLE IF EXISTS users;
DROP TYPE IF EXISTS notification_type;
DROP TYPE IF EXISTS audit_action;
DROP TYPE IF EXISTS gender;
