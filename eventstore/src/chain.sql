-- Each event of the chosen streams with what verification needs: the sequence before it in its
-- stream and whether its stored hash is what `event_hash` gives over its predecessor's stored
-- hash and its own columns. Read in primary-key order, so the window needs no sort.
SELECT aggregate_type, aggregate_id, sequence, global_position,
       lag(sequence) OVER stream AS previous_sequence,
       hash = event_hash(lag(hash) OVER stream, aggregate_type, aggregate_id, sequence,
                         event_type, event_version, payload, metadata) AS intact
  FROM events
