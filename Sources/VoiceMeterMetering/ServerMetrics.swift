import Metrics
import VoiceMeterDomain

/// Handles for what the server counts (created once; cheap to use from any thread).
package struct ServerMetrics: Sendable {
    package init() {}

    /// Open WebSocket connections.
    package let connections = Meter(label: "voicemeter_connections")
    /// Connections closed because their token was revoked or stopped being an ingest token.
    package let connectionsRevoked = Counter(label: "voicemeter_connections_revoked_total")
    /// Usage frames decoded from clients.
    package let framesReceived = Counter(label: "voicemeter_frames_received_total")
    private let rejectedByCode: [ProtocolErrorCode: Counter] = Dictionary(uniqueKeysWithValues: ProtocolErrorCode.allCases.map {
        ($0, Counter(label: "voicemeter_frames_rejected_total", dimensions: [("code", $0.rawValue)]))
    })
    package let budgetWarnings = Counter(label: "voicemeter_budget_warnings_total")
    package let budgetCutoffs = Counter(label: "voicemeter_budget_cutoffs_total")
    /// `call.start`s refused because their connection carried `calls-per-connection-max` calls.
    package let callsRefusedForConnectionLimit = Counter(label: "voicemeter_calls_refused_connection_limit_total")
    /// Frames for unknown calls answered but not written to `rejected_frames` (past
    /// `unknown-call-records-per-second` on their connection).
    package let rejectedFramesNotRecorded = Counter(label: "voicemeter_rejected_frames_unrecorded_total")
    /// Budget grants (issue 22): requests that got something, that wanted something and got
    /// nothing (the user's budget is spent or held by other nodes), and grants of dead holders
    /// removed after their lease; frames refused for now while their user's grant was empty and
    /// none could be asked for (the database away).
    package let grantsTaken = Counter(label: "voicemeter_budget_grants_taken_total")
    package let grantsRefused = Counter(label: "voicemeter_budget_grants_refused_total")
    package let grantsExpired = Counter(label: "voicemeter_budget_grants_expired_total")
    package let grantRequestsFailed = Counter(label: "voicemeter_budget_grant_requests_failed_total")
    package let framesRefusedForGrant = Counter(label: "voicemeter_frames_refused_for_grant_total")
    /// Frames stored without a price in force (priced later by `voicemeter reprice`).
    package let unpricedEvents = Counter(label: "voicemeter_unpriced_events_total")

    /// Counts an `error` answer by its code.
    package func rejected(_ code: ProtocolErrorCode) { rejectedByCode[code]?.increment() }

    /// Counts what a server message signals (errors by code, warnings).
    package func sent(_ message: ServerMessage) {
        switch message {
        case .error(let error): rejected(error.code)
        case .budgetWarning: budgetWarnings.increment()
        case .callAccepted, .callRejected, .ack, .budgetCutoff, .callSummary: break
        }
    }
}
