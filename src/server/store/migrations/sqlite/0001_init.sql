-- The first schema of the SQLite store. Times are milliseconds since the Unix epoch (UTC).

CREATE TABLE users (
    email        TEXT PRIMARY KEY NOT NULL,
    display_name TEXT,
    created_at   INTEGER NOT NULL
);

CREATE TABLE rooms (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    -- Sequence of the newest message; messages are numbered 1, 2, 3... per room.
    last_seq     INTEGER NOT NULL DEFAULT 0,
    member_count INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE room_members (
    room_id   INTEGER NOT NULL REFERENCES rooms (id),
    email     TEXT NOT NULL REFERENCES users (email),
    joined_at INTEGER NOT NULL,
    -- Everything up to this sequence has been read.
    last_read INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, email)
);

CREATE INDEX room_members_by_email ON room_members (email);

CREATE TABLE messages (
    room_id    INTEGER NOT NULL REFERENCES rooms (id),
    seq        INTEGER NOT NULL,
    author     TEXT NOT NULL,
    -- The id the author's client chose; a resend with the same id is not stored twice.
    client_id  TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq)
);

CREATE UNIQUE INDEX messages_by_client_id ON messages (author, client_id);

CREATE TABLE magic_links (
    -- SHA-256 of the token; the token itself is never stored.
    token_hash BLOB PRIMARY KEY NOT NULL,
    email      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);

CREATE INDEX magic_links_by_email ON magic_links (email);

-- One row per magic-link request that was counted against the hourly limit.
CREATE TABLE link_requests (
    email        TEXT NOT NULL,
    requested_at INTEGER NOT NULL
);

CREATE INDEX link_requests_by_email ON link_requests (email, requested_at);
