-- PostgreSQL's 0008 turns the JSONB list columns of `tokens` and `virtual_keys` into TEXT;
-- SQLite has always stored them as TEXT. This step changes nothing and keeps the two
-- migration directories numbered alike.
SELECT 1;
