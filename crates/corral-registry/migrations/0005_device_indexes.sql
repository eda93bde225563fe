-- The console sorts the inventory by these; without an index each sorted page of a large fleet
-- would sort every device.
CREATE INDEX devices_last_seen ON devices (last_seen, id);
CREATE INDEX devices_status ON devices (status, id);
CREATE INDEX devices_created_at ON devices (created_at, id);
