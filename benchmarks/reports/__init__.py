"""Reports: what tables and figures compute from records (records in, numbers out; nothing runs)."""
