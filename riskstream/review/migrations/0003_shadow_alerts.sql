-- A shadow model's would-be alerts (`worker --shadow-bundle` writes them to `alerts.shadow`),
-- kept apart from the live alerts: they open no case and never reach the queue. The Precision
-- page compares them with the live alerts of the same period, per (user, head).

CREATE TABLE shadow_alerts (
    alert_id         TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    type             TEXT NOT NULL CHECK (type IN ('fraud', 'abnormal_click')),
    severity         TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    score            DOUBLE PRECISION NOT NULL,
    threshold        DOUBLE PRECISION NOT NULL,
    model_version    TEXT NOT NULL,
    rule_ids         TEXT[] NOT NULL DEFAULT '{}',
    event_id         TEXT NOT NULL,
    event_ts         TIMESTAMPTZ NOT NULL,
    detected_at      TIMESTAMPTZ NOT NULL,
    payload          JSONB NOT NULL,
    received_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    source_partition INTEGER,
    source_offset    BIGINT
);
CREATE INDEX shadow_alerts_detected ON shadow_alerts (detected_at);
CREATE INDEX shadow_alerts_pair ON shadow_alerts (user_id, type);
CREATE INDEX alerts_pair ON alerts (user_id, type);
