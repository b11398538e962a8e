"""The inventory engine: per-schedule, segment-aware seat bitmaps in Redis, driven by Lua."""
