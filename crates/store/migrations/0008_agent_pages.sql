-- The fleet view is read a page at a time in (name, id) order.
CREATE INDEX agents_name_id ON agents (name, id);
