"""PostgreSQL recorder: eventsourcing's, made append-only by triggers."""

from __future__ import annotations

from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore
from psycopg.sql import SQL, Identifier

APPEND_ONLY_MESSAGE = "tierlog: the event log is append-only"


class TierlogPostgresRecorder(PostgresApplicationRecorder):
    """Application recorder whose table refuses UPDATE, DELETE and TRUNCATE."""

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        function = Identifier(f"{self.events_table_name}_append_only")
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}() RETURNS trigger "
                "LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION '{message}' USING ERRCODE = 'insufficient_privilege'; "
                "END $$"
            ).format(schema=schema, function=function, message=SQL(APPEND_ONLY_MESSAGE))
        )
        for kind, each in (("update_delete", "FOR EACH ROW"), ("truncate", "FOR EACH STATEMENT")):
            events = "UPDATE OR DELETE" if kind == "update_delete" else "TRUNCATE"
            trigger = Identifier(f"{self.events_table_name}_no_{kind}")
            self.sql_create_statements.append(
                SQL(
                    "DO $$ BEGIN "
                    "CREATE TRIGGER {trigger} BEFORE {events} ON {schema}.{table} "
                    "{each} EXECUTE FUNCTION {schema}.{function}(); "
                    "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
                ).format(
                    trigger=trigger,
                    events=SQL(events),
                    schema=schema,
                    table=table,
                    each=SQL(each),
                    function=function,
                )
            )
