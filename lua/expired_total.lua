-- expired_total: how many holds of one key prefix this server's reap() has expired (on write,
-- or by reap.lua) since Redis started or the library was last loaded: the library-level
-- EXPIRED_TOTAL of lib/common.lua. Per server: on Cluster the caller reads it on every master
-- and sums.
-- @function no-writes
-- ARGV[1] prefix: the deployment's key prefix (Keys.prefix)
-- Returns: expired holds (integer)

-- @include lib/common.lua

return EXPIRED_TOTAL[ARGV[1]] or 0
