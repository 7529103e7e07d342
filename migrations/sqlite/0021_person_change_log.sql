-- The persons whose rows or insurances changed, in order: the swipe writer's person cache
-- (store::persons::PersonCache) forgets just those persons. It used to forget everyone on any
-- change, counted by person_generation (0015, dropped here): with bureaus enrolling during the
-- day, every EnrolPersons call emptied it. Every insert, update or delete of either table, by
-- any connection, logs its psn_no (both, should an update change it) in the same transaction.
-- The writer deletes the rows it has read; AUTOINCREMENT keeps their numbers from being used
-- again, so a reader can tell from sqlite_sequence whether rows it never saw are gone.
-- IF [NOT] EXISTS: the upgrade tests run the migrations from 0013 on again.
CREATE TABLE IF NOT EXISTS person_change (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    psn_no TEXT NOT NULL
);

CREATE TRIGGER IF NOT EXISTS person_change_person_insert AFTER INSERT ON person
BEGIN INSERT INTO person_change (psn_no) VALUES (NEW.psn_no); END;
CREATE TRIGGER IF NOT EXISTS person_change_person_update AFTER UPDATE ON person
BEGIN
    INSERT INTO person_change (psn_no) VALUES (OLD.psn_no);
    INSERT INTO person_change (psn_no) SELECT NEW.psn_no WHERE NEW.psn_no <> OLD.psn_no;
END;
CREATE TRIGGER IF NOT EXISTS person_change_person_delete AFTER DELETE ON person
BEGIN INSERT INTO person_change (psn_no) VALUES (OLD.psn_no); END;
CREATE TRIGGER IF NOT EXISTS person_change_insurance_insert AFTER INSERT ON person_insurance
BEGIN INSERT INTO person_change (psn_no) VALUES (NEW.psn_no); END;
CREATE TRIGGER IF NOT EXISTS person_change_insurance_update AFTER UPDATE ON person_insurance
BEGIN
    INSERT INTO person_change (psn_no) VALUES (OLD.psn_no);
    INSERT INTO person_change (psn_no) SELECT NEW.psn_no WHERE NEW.psn_no <> OLD.psn_no;
END;
CREATE TRIGGER IF NOT EXISTS person_change_insurance_delete AFTER DELETE ON person_insurance
BEGIN INSERT INTO person_change (psn_no) VALUES (OLD.psn_no); END;

DROP TRIGGER IF EXISTS person_generation_person_insert;
DROP TRIGGER IF EXISTS person_generation_person_update;
DROP TRIGGER IF EXISTS person_generation_person_delete;
DROP TRIGGER IF EXISTS person_generation_insurance_insert;
DROP TRIGGER IF EXISTS person_generation_insurance_update;
DROP TRIGGER IF EXISTS person_generation_insurance_delete;
DROP TABLE IF EXISTS person_generation;
