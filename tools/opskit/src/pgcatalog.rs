//! What a dump carries, asked of the catalog: the tables whose rows
//! pg_dump writes, and their exact row counts (pgbackup records them in the
//! dump's snapshot, verify-backup compares them after a restore). Every
//! name is schema-qualified: a restored database's own `search_path` or
//! functions must not change what these queries run.

/// Quote an identifier for SQL (`"a""b"`).
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The tables whose rows a dump carries: ordinary tables and leaf
/// partitions outside the system schemas and not owned by an extension.
pub const DUMPED_TABLES_SQL: &str = "\
    SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind = 'r' \
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass \
                      AND d.objid = c.oid AND d.deptype = 'e') \
    ORDER BY 1, 2";

/// Exact row counts of every dumped table, keyed `schema.table`, in the
/// client's current transaction (so in its snapshot, when one is set).
pub fn table_row_counts(
    client: &mut postgres::Client,
) -> Result<std::collections::BTreeMap<String, u64>, postgres::Error> {
    let tables: Vec<(String, String)> = client
        .query(DUMPED_TABLES_SQL, &[])?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for (schema, table) in tables {
        let sql = format!(
            "SELECT pg_catalog.count(*) FROM ONLY {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        let n: i64 = client.query_one(sql.as_str(), &[])?.get(0);
        out.insert(format!("{schema}.{table}"), n as u64);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("Mixed\"Case"), "\"Mixed\"\"Case\"");
    }
}
