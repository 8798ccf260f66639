-- The first schema of the PostgreSQL store: the SQLite schema, with the tables several
-- nodes share besides. Times are milliseconds since the Unix epoch (UTC). Emails and room
-- names compare byte by byte (COLLATE "C"), as in SQLite, so pages by email agree with
-- every client's ordering.

CREATE TABLE users (
    email        TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT,
    created_at   BIGINT NOT NULL
);

CREATE TABLE rooms (
    id           BIGSERIAL PRIMARY KEY,
    name         TEXT COLLATE "C" NOT NULL UNIQUE,
    created_at   BIGINT NOT NULL,
    -- Sequence of the newest message; messages are numbered 1, 2, 3... per room. Appends
    -- lock the room's row to take their numbers, so every node numbers in commit order.
    last_seq     BIGINT NOT NULL DEFAULT 0,
    member_count BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE room_members (
    room_id   BIGINT NOT NULL REFERENCES rooms (id),
    email     TEXT COLLATE "C" NOT NULL REFERENCES users (email),
    joined_at BIGINT NOT NULL,
    -- Everything up to this sequence has been read.
    last_read BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, email)
);

CREATE INDEX room_members_by_email ON room_members (email);

CREATE TABLE messages (
    room_id    BIGINT NOT NULL REFERENCES rooms (id),
    seq        BIGINT NOT NULL,
    author     TEXT COLLATE "C" NOT NULL,
    -- The id the author's client chose; a resend with the same id is not stored twice.
    client_id  TEXT COLLATE "C" NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, seq)
);

CREATE UNIQUE INDEX messages_by_client_id ON messages (author, client_id);

CREATE TABLE magic_links (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash BYTEA PRIMARY KEY,
    email      TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);

CREATE INDEX magic_links_by_email ON magic_links (email);

-- One row per magic-link request that was counted against the hourly limit.
CREATE TABLE link_requests (
    email        TEXT COLLATE "C" NOT NULL,
    requested_at BIGINT NOT NULL
);

CREATE INDEX link_requests_by_email ON link_requests (email, requested_at);

-- The running nodes: each says it is alive every few seconds.
CREATE TABLE nodes (
    id      TEXT PRIMARY KEY,
    seen_at BIGINT NOT NULL
);

-- Who has at least one connection on which node: a user is online while a row of a live
-- node names them.
CREATE TABLE presence (
    node  TEXT NOT NULL REFERENCES nodes (id) ON DELETE CASCADE,
    email TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (node, email)
);

CREATE INDEX presence_by_email ON presence (email);
