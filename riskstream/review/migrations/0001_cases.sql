-- Cases, their alerts and the analysts' decisions.
-- One case per user while it is open: a user's new alerts join the open (or escalated) case.

CREATE TABLE cases (
    case_id     BIGSERIAL PRIMARY KEY,
    user_id     TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'escalated', 'closed')),
    opened_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at   TIMESTAMPTZ,
    verdict     TEXT
);
CREATE UNIQUE INDEX cases_one_open_per_user ON cases (user_id) WHERE status <> 'closed';
CREATE INDEX cases_status ON cases (status, updated_at DESC);

CREATE TABLE alerts (
    alert_id         TEXT PRIMARY KEY,
    case_id          BIGINT NOT NULL REFERENCES cases (case_id),
    user_id          TEXT NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('fraud', 'abnormal_click')),
    severity         TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    severity_rank    SMALLINT NOT NULL,
    score            DOUBLE PRECISION NOT NULL,
    threshold        DOUBLE PRECISION NOT NULL,
    model_version    TEXT NOT NULL,
    rule_ids         TEXT[] NOT NULL DEFAULT '{}',
    event_id         TEXT NOT NULL,
    event_ts         TIMESTAMPTZ NOT NULL,
    window_start     TIMESTAMPTZ NOT NULL,
    detected_at      TIMESTAMPTZ NOT NULL,
    payload          JSONB NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    source_partition INTEGER,
    source_offset    BIGINT
);
CREATE INDEX alerts_case ON alerts (case_id);
CREATE INDEX alerts_detected ON alerts (detected_at);
CREATE INDEX alerts_model_version ON alerts (model_version);

CREATE TABLE decisions (
    decision_id    UUID PRIMARY KEY,
    case_id        BIGINT NOT NULL REFERENCES cases (case_id),
    user_id        TEXT NOT NULL,
    verdict        TEXT NOT NULL CHECK (verdict IN
                       ('confirmed_fraud', 'confirmed_abnormal_click', 'false_positive', 'escalated')),
    alert_ids      TEXT[] NOT NULL,
    alert_types    TEXT[] NOT NULL,
    model_versions TEXT[] NOT NULL DEFAULT '{}',
    window_start   TIMESTAMPTZ NOT NULL,
    window_end     TIMESTAMPTZ NOT NULL,
    analyst        TEXT NOT NULL,
    note           TEXT NOT NULL DEFAULT '',
    decided_at     TIMESTAMPTZ NOT NULL,
    payload        JSONB NOT NULL,
    published_at   TIMESTAMPTZ
);
CREATE INDEX decisions_case ON decisions (case_id, decided_at DESC);
CREATE INDEX decisions_decided ON decisions (decided_at);
CREATE INDEX decisions_unpublished ON decisions (decided_at) WHERE published_at IS NULL;

-- Each alert with the final verdict on it (the latest decision covering it that is not an
-- escalation), for the queue's status and the precision figures.
CREATE VIEW alert_verdicts AS
SELECT a.*, c.status AS case_status, d.verdict, d.decided_at
FROM alerts a
JOIN cases c USING (case_id)
LEFT JOIN LATERAL (
    SELECT verdict, decided_at FROM decisions d
    WHERE d.case_id = a.case_id AND a.alert_id = ANY (d.alert_ids) AND d.verdict <> 'escalated'
    ORDER BY d.decided_at DESC LIMIT 1
) d ON true;
