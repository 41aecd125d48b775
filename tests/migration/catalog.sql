-- The catalog of the outbox schema, as rows a test can compare between two
-- databases (tests/migration/test_current_schema.py). Every query returns
-- (object, detail): object names one thing, detail is everything about it that
-- a migration could get wrong. Nothing here depends on oids or creation order,
-- so two databases built differently give the same rows when their schemas match.
-- The schema is found with to_regnamespace(), not ::regnamespace, so that a
-- database without it (at base) has an empty catalog rather than an error.

-- name: relations
-- Tables, views, sequences and composite types: kind, persistence (unlogged),
-- storage options, row security, partition key.
SELECT c.relname AS object,
       concat_ws(' ', 'kind=' || c.relkind::text, 'persistence=' || c.relpersistence::text,
                 'options=' || coalesce(c.reloptions::text, '{}'),
                 'rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity,
                 'partition=' || pg_get_partkeydef(c.oid)) AS detail
FROM pg_class c
WHERE c.relnamespace = to_regnamespace('outbox')
  AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
ORDER BY 1;

-- name: columns
-- Every column, with its position among the columns that exist (a dropped and
-- re-added column keeps a gap in attnum; what a DBA sees is the order).
SELECT c.relname || '.' || a.attname AS object,
       concat_ws(' ',
                 '#' || row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                 format_type(a.atttypid, a.atttypmod),
                 CASE WHEN a.attnotnull THEN 'NOT NULL' END,
                 'DEFAULT ' || pg_get_expr(d.adbin, d.adrelid),
                 CASE a.attidentity WHEN 'a' THEN 'IDENTITY ALWAYS'
                                    WHEN 'd' THEN 'IDENTITY BY DEFAULT' END,
                 CASE WHEN a.attgenerated = 's' THEN 'GENERATED STORED' END,
                 'COLLATE ' || nullif(co.collname, 'default'),
                 'STATISTICS ' || nullif(a.attstattarget, -1)) AS detail
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 0
WHERE c.relnamespace = to_regnamespace('outbox') AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')
ORDER BY 1;

-- name: constraints
-- Table and domain constraints by name, with their full definitions.
SELECT coalesce(c.relname, t.typname) || '.' || k.conname AS object,
       k.contype::text || ' ' || pg_get_constraintdef(k.oid, true)
       || CASE WHEN k.convalidated THEN '' ELSE ' (not validated)' END AS detail
FROM pg_constraint k
LEFT JOIN pg_class c ON c.oid = k.conrelid
LEFT JOIN pg_type t ON t.oid = k.contypid
WHERE k.connamespace = to_regnamespace('outbox')
ORDER BY 1;

-- name: indexes
-- Every index (those behind constraints too), as CREATE INDEX would write it.
SELECT i.relname AS object,
       pg_get_indexdef(i.oid) || CASE WHEN x.indisvalid THEN '' ELSE ' (invalid)' END AS detail
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
WHERE i.relnamespace = to_regnamespace('outbox')
ORDER BY 1;

-- name: functions
-- Functions and procedures by signature: what they return and how they run.
SELECT p.oid::regprocedure::text AS object,
       concat_ws(' ',
                 'kind=' || p.prokind::text,
                 'returns=' || pg_get_function_result(p.oid),
                 'args=' || pg_get_function_arguments(p.oid),
                 'language=' || l.lanname,
                 'volatility=' || p.provolatile::text,
                 'strict=' || p.proisstrict,
                 'security_definer=' || p.prosecdef,
                 'leakproof=' || p.proleakproof,
                 'parallel=' || p.proparallel::text,
                 'cost=' || p.procost,
                 'rows=' || p.prorows,
                 'config=' || coalesce(p.proconfig::text, '{}')) AS detail
FROM pg_proc p
JOIN pg_language l ON l.oid = p.prolang
WHERE p.pronamespace = to_regnamespace('outbox')
ORDER BY 1;

-- name: function_bodies
-- Function bodies, apart from their attributes so that a diff shows the lines
-- that differ.
SELECT p.oid::regprocedure::text AS object, coalesce(p.prosrc, '') AS detail
FROM pg_proc p
WHERE p.pronamespace = to_regnamespace('outbox')
ORDER BY 1;

-- name: triggers
-- User triggers (not those behind foreign keys), with whether they are enabled.
SELECT c.relname || '.' || t.tgname AS object,
       pg_get_triggerdef(t.oid, true) || ' enabled=' || t.tgenabled::text AS detail
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = to_regnamespace('outbox') AND NOT t.tgisinternal
ORDER BY 1;

-- name: views
-- View and materialized view definitions, as PostgreSQL prints them back.
SELECT c.relname AS object, pg_get_viewdef(c.oid, true) AS detail
FROM pg_class c
WHERE c.relnamespace = to_regnamespace('outbox') AND c.relkind IN ('v', 'm')
ORDER BY 1;

-- name: sequences
-- Sequence parameters, and the column that owns each (identity or serial).
SELECT c.relname AS object,
       concat_ws(' ', format_type(s.seqtypid, NULL), 'start=' || s.seqstart,
                 'increment=' || s.seqincrement, 'min=' || s.seqmin, 'max=' || s.seqmax,
                 'cache=' || s.seqcache, 'cycle=' || s.seqcycle,
                 'owned_by=' || oc.relname || '.' || a.attname) AS detail
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class oc ON oc.oid = d.refobjid
LEFT JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
WHERE c.relnamespace = to_regnamespace('outbox')
ORDER BY 1;

-- name: types
-- Enum types with their labels in order, domains with their base type, ranges.
-- (Composite types of tables are the tables; free-standing ones are in relations.)
SELECT t.typname AS object,
       CASE t.typtype
           WHEN 'e' THEN 'enum ' || (SELECT string_agg(e.enumlabel, ', ' ORDER BY e.enumsortorder)
                                     FROM pg_enum e WHERE e.enumtypid = t.oid)
           WHEN 'd' THEN concat_ws(' ', 'domain', format_type(t.typbasetype, t.typtypmod),
                                   CASE WHEN t.typnotnull THEN 'NOT NULL' END,
                                   'DEFAULT ' || t.typdefault)
           ELSE 'typtype=' || t.typtype::text
       END AS detail
FROM pg_type t
WHERE t.typnamespace = to_regnamespace('outbox') AND t.typtype IN ('e', 'd', 'r', 'm')
ORDER BY 1;

-- name: comments
-- Every comment on the schema and on anything in it: tables, columns, views,
-- types, functions, constraints, indexes, triggers.
SELECT o.type || ' ' || o.identity AS object, d.description AS detail
FROM pg_description d
CROSS JOIN LATERAL pg_identify_object(d.classoid, d.objoid, d.objsubid) o
WHERE o.schema = 'outbox'
   OR (o.type = 'schema' AND o.identity = 'outbox')
   OR o.identity LIKE '% on outbox.%'
ORDER BY 1;

-- name: policies
-- Row security policies: command, roles, and their USING / WITH CHECK expressions.
SELECT c.relname || '.' || p.polname AS object,
       concat_ws(' ', 'cmd=' || p.polcmd::text, 'permissive=' || p.polpermissive,
                 'roles=' || (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC'
                                                     ELSE r::regrole::text END, ',' ORDER BY 1)
                              FROM unnest(p.polroles) r),
                 'using=' || pg_get_expr(p.polqual, p.polrelid),
                 'check=' || pg_get_expr(p.polwithcheck, p.polrelid)) AS detail
FROM pg_policy p
JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = to_regnamespace('outbox')
ORDER BY 1;

-- name: privileges
-- Who may do what: on the schema, every relation, column, function and type, and
-- the schema's default privileges, one row per object and grantee. A NULL ACL
-- means the built-in default, so it is expanded with acldefault(): a database
-- that granted the defaults explicitly matches one that never granted anything.
WITH acls AS (
    SELECT 'schema outbox' AS object, coalesce(n.nspacl, acldefault('n', n.nspowner)) AS acl
    FROM pg_namespace n WHERE n.nspname = 'outbox'
    UNION ALL
    SELECT 'relation ' || c.relname,
           coalesce(c.relacl, acldefault(CASE c.relkind WHEN 'S' THEN 's' ELSE 'r' END::"char",
                                         c.relowner))
    FROM pg_class c
    WHERE c.relnamespace = to_regnamespace('outbox') AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
    UNION ALL
    SELECT 'column ' || c.relname || '.' || a.attname, a.attacl
    FROM pg_class c
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
    WHERE c.relnamespace = to_regnamespace('outbox') AND a.attacl IS NOT NULL
    UNION ALL
    SELECT 'function ' || p.oid::regprocedure::text, coalesce(p.proacl, acldefault('f', p.proowner))
    FROM pg_proc p WHERE p.pronamespace = to_regnamespace('outbox')
    UNION ALL
    SELECT 'type ' || t.typname, coalesce(t.typacl, acldefault('T', t.typowner))
    FROM pg_type t
    WHERE t.typnamespace = to_regnamespace('outbox') AND t.typtype IN ('e', 'd', 'r', 'm')
    UNION ALL
    SELECT 'default privileges on ' || CASE d.defaclobjtype WHEN 'r' THEN 'tables'
                                           WHEN 'S' THEN 'sequences' WHEN 'f' THEN 'functions'
                                           WHEN 'T' THEN 'types' ELSE d.defaclobjtype::text END
           || ' for ' || d.defaclrole::regrole::text, d.defaclacl
    FROM pg_default_acl d WHERE d.defaclnamespace = to_regnamespace('outbox')
)
SELECT acls.object || ' to ' || CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                                     ELSE x.grantee::regrole::text END AS object,
       string_agg(x.privilege_type || CASE WHEN x.is_grantable THEN ' WITH GRANT' ELSE '' END,
                  ', ' ORDER BY x.privilege_type) AS detail
FROM acls
CROSS JOIN LATERAL aclexplode(acls.acl) x
GROUP BY 1
ORDER BY 1;
