-- Every journal event and snapshot carries the schema version it was written with, so an
-- entity can upgrade what older code wrote (valux.persistence.upcasting). Rows written
-- before this migration are version 1.
ALTER TABLE journal ADD COLUMN version smallint NOT NULL DEFAULT 1;
ALTER TABLE snapshots ADD COLUMN version smallint NOT NULL DEFAULT 1;
