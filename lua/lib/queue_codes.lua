-- Waiting-room reply codes, mirrored by kai_inventory/engine/waiting_room.py QCode (a test checks).
local Q_OK = 0
local Q_SALE_NOT_FOUND = -101
local Q_SALE_NOT_OPEN = -102
local Q_NOT_IN_QUEUE = -103
local Q_NOT_ADMITTED = -104
local Q_ADMISSION_EXPIRED = -105
local Q_SALE_CONFLICT = -106
local Q_INVALID_ARGUMENT = -107
