-- Every change of an allow / deny list (riskstream lists add|remove, or the console's list
-- action on a case): who, when, why, and what. Append-only: the audit trail of the lists files.

CREATE TABLE list_changes (
    change_id    BIGSERIAL PRIMARY KEY,
    changed_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    actor        TEXT NOT NULL,
    operation    TEXT NOT NULL CHECK (operation IN ('add', 'remove')),
    action       TEXT NOT NULL CHECK (action IN ('allow', 'deny')),
    kind         TEXT NOT NULL CHECK (kind IN ('user', 'device', 'payment', 'ip')),
    value        TEXT NOT NULL,
    alert_type   TEXT CHECK (alert_type IN ('fraud', 'abnormal_click')),
    expires_at   TIMESTAMPTZ,            -- NULL: never (or a removal)
    reason       TEXT NOT NULL,
    list_file    TEXT NOT NULL,
    source       TEXT NOT NULL CHECK (source IN ('cli', 'console')),
    case_id      BIGINT REFERENCES cases (case_id),
    decision_id  UUID
);
CREATE INDEX list_changes_value ON list_changes (kind, value, changed_at DESC);
CREATE INDEX list_changes_when ON list_changes (changed_at);
