-- AllThingsTalk assets are variables with a title, a description, a kind (sensor, actuator, config, virtual) and a
-- profile (a JSON schema subset) that incoming states must satisfy.

ALTER TABLE variables ADD COLUMN title TEXT NOT NULL DEFAULT '';
ALTER TABLE variables ADD COLUMN description TEXT NOT NULL DEFAULT '';
ALTER TABLE variables ADD COLUMN kind TEXT NOT NULL DEFAULT 'sensor';
ALTER TABLE variables ADD COLUMN profile TEXT;
