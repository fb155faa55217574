-- A fleet search by name glob (`web-*`) seeks to its literal start in this index
-- (`LOWER(name) >= 'web-' AND LOWER(name) < 'web.'`) instead of reading every
-- agent in name order and testing each: the glob is case-insensitive, so the
-- index is on the lowercase name. On PostgreSQL it is built in the `C` collation,
-- as the queries compare: in a language collation (en_US…) the names starting
-- with a prefix need not form one range, so the bounds could drop matches.
-- SQLite compares bytes already and has no collation called C, so the clause is
-- a comment there that the migration runner uncomments for PostgreSQL.
CREATE INDEX agents_name_lower ON agents ((LOWER(name) /*pg: COLLATE "C" :pg*/));
