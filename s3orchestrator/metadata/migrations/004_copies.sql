-- Every copy of every object: where its bytes are (store, location) and in which state.
--
-- state: 'pending' (being written), 'live' (committed, readable), 'deleting' (its object
-- was overwritten or deleted; the bytes await removal). Today every object has exactly one
-- live copy, written in the transaction that writes the object; objects.store and
-- objects.location still describe that copy for readers until they read copies instead
-- (issue 13, replicas). Every existing object becomes one live copy here.

CREATE TABLE copies (
    bucket TEXT @KEY_COLLATE@ NOT NULL,
    key TEXT @KEY_COLLATE@ NOT NULL,
    store TEXT NOT NULL REFERENCES stores (name),
    location TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'live', 'deleting')),
    size BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (bucket, key, store)
);

CREATE INDEX copies_by_store ON copies (store, state);

INSERT INTO copies (bucket, key, store, location, state, size, created_ms)
    SELECT bucket, key, store, location, 'live', size, last_modified_ms FROM objects;
