"""The Postgres store (`store.PostgresStore`): several memproxy processes sharing one database.

Nothing is imported here, so that importing one module of this package (the SQL of a search,
the vectors) does not need asyncpg; `open_store` and the CLI's `migrate` import `store` only
for postgresql:// URLs (asyncpg is an optional dependency).
"""
