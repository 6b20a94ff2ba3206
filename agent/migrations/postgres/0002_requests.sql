-- Approval requests: an action held until enough approvers agree (or a timeout
-- decides). Shared by every gateway using this store; the host that holds the
-- client's connection owns the clock.
CREATE TABLE requests (
    id TEXT COLLATE "C" PRIMARY KEY,
    host TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- When the current stage times out (unix ms).
    expires_at BIGINT NOT NULL,
    target TEXT NOT NULL,
    protocol TEXT NOT NULL,
    -- The gated action as JSON, and a one-line human summary of it.
    action TEXT NOT NULL,
    summary TEXT NOT NULL,
    principal TEXT NOT NULL,
    requester_uid BIGINT NOT NULL,
    session_id TEXT NULL,
    rule TEXT NULL,
    -- Approver group names (JSON list) of the current stage, and the quorum.
    approvers TEXT NOT NULL,
    quorum BIGINT NOT NULL,
    -- review | escalated
    stage TEXT NOT NULL,
    -- pending | approved | denied | timeout | abandoned
    status TEXT NOT NULL,
    decided_at BIGINT NULL,
    decided_by TEXT NULL,
    reason TEXT NULL
);
CREATE INDEX requests_status_created ON requests (status, created_at);

-- One row per approver per request: an approval counts once per person.
CREATE TABLE approvals (
    request_id TEXT NOT NULL,
    approver_uid BIGINT NOT NULL,
    approver TEXT NOT NULL,
    at BIGINT NOT NULL,
    reason TEXT NULL,
    PRIMARY KEY (request_id, approver_uid)
);
