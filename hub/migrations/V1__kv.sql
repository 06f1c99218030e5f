-- Every tree of the store (tasks, agents, meta, sessions) in one table,
-- ordered by (tree, key) as sled orders its keys; see
-- hub/src/store/postgres.rs and docs/decisions/0014.
CREATE TABLE agentcom_kv (
    tree smallint NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    PRIMARY KEY (tree, key)
);
