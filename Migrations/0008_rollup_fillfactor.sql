-- Rollup rows are updated by every commit that touches their call, user or day. With free space
-- left on each page, PostgreSQL updates them in place (HOT: no new index entries, no page
-- split); measured with live calls each adding a frame per commit (voicemeter-bench ledger
-- --interleave 10000).
ALTER TABLE cost_summaries SET (fillfactor = 50);
