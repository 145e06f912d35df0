"""`make docs`' web server: dbt's generated docs site (target/) on the loopback, read-only."""
