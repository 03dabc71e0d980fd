-- Edges (issue 23): scoped ingest tokens.
-- An ingest token with a user_scope may open calls only for user_ids that start with it (one
-- tenant's pipelines); without one it may open calls for any user (one operator's own pipelines).
ALTER TABLE ingest_tokens ADD COLUMN user_scope text
    CHECK (user_scope IS NULL OR (kind = 'ingest' AND length(user_scope) BETWEEN 1 AND 255));
