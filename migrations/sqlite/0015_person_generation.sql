-- A count of changes to persons and their insurances: the swipe writer keeps the persons it
-- looked up (store::persons::PersonCache) while this count stays the same. Every insert, update
-- or delete of either table, by any connection, adds one in the same transaction.
CREATE TABLE person_generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO person_generation (id, n) VALUES (1, 0);

CREATE TRIGGER person_generation_person_insert AFTER INSERT ON person
BEGIN UPDATE person_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER person_generation_person_update AFTER UPDATE ON person
BEGIN UPDATE person_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER person_generation_person_delete AFTER DELETE ON person
BEGIN UPDATE person_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER person_generation_insurance_insert AFTER INSERT ON person_insurance
BEGIN UPDATE person_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER person_generation_insurance_update AFTER UPDATE ON person_insurance
BEGIN UPDATE person_generation SET n = n + 1 WHERE id = 1; END;
CREATE TRIGGER person_generation_insurance_delete AFTER DELETE ON person_insurance
BEGIN UPDATE person_generation SET n = n + 1 WHERE id = 1; END;
