-- Which hub leads (issue 13): one row, the lease. A hub leads while it
-- holds the row and the lease has not lapsed (the database's clock
-- decides); each taking of it raises the term, and every commit of the
-- leader checks its term here, so a deposed leader's late writes are
-- refused (see hub/src/store/postgres.rs and docs/decisions/0015).
CREATE TABLE agentcom_leader (
    id smallint PRIMARY KEY CHECK (id = 1),
    term bigint NOT NULL,
    holder text NOT NULL,
    url text,
    expires_at timestamptz NOT NULL
);
INSERT INTO agentcom_leader (id, term, holder, url, expires_at)
VALUES (1, 0, '', NULL, '-infinity');
