-- Client addresses and networks blocked by an operator (`wardenctl ip block`), sent to the
-- nodes in every snapshot: requests from them are refused with 403 `ip_blocked` before any
-- credential lookup. `cidr` is the normalised network (`192.0.2.7/32`, `2001:db8::/48`);
-- `expires_at` (Unix seconds) NULL: until unblocked.
CREATE TABLE ip_blocks (
    cidr TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT
);
