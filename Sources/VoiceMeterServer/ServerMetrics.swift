import Metrics
import struct Prometheus.PrometheusMetricsFactory
import class Prometheus.PrometheusCollectorRegistry
import VoiceMeterDomain

/// The process's metrics: swift-metrics handles, backed by one Prometheus registry that
/// `GET /metrics` renders in the text exposition format.
public enum MetricsExport {
    /// Bootstraps swift-metrics with this registry the first time it is used (once per process).
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = [1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000].map { Duration.milliseconds($0) }
        factory.valueHistogramBuckets[ServerMetrics.batchEventsLabel] = [1, 10, 50, 100, 250, 500, 1_000, 2_000, 5_000]
        MetricsSystem.bootstrap(factory)
        return registry
    }()

    /// Every metric in Prometheus text format.
    public static func render() -> String { registry.emitToString() }
}

/// Handles for what the server counts (created once; cheap to use from any thread).
struct ServerMetrics: Sendable {
    static let batchEventsLabel = "voicemeter_commit_batch_events"

    /// Open WebSocket connections.
    let connections = Meter(label: "voicemeter_connections")
    /// Connections closed because their token was revoked or stopped being an ingest token.
    let connectionsRevoked = Counter(label: "voicemeter_connections_revoked_total")
    /// Usage frames decoded from clients.
    let framesReceived = Counter(label: "voicemeter_frames_received_total")
    private let rejectedByCode: [ProtocolErrorCode: Counter] = Dictionary(uniqueKeysWithValues: ProtocolErrorCode.allCases.map {
        ($0, Counter(label: "voicemeter_frames_rejected_total", dimensions: [("code", $0.rawValue)]))
    })
    let budgetWarnings = Counter(label: "voicemeter_budget_warnings_total")
    let budgetCutoffs = Counter(label: "voicemeter_budget_cutoffs_total")
    /// `call.start`s refused because their connection carried `calls-per-connection-max` calls.
    let callsRefusedForConnectionLimit = Counter(label: "voicemeter_calls_refused_connection_limit_total")
    /// Frames for unknown calls answered but not written to `rejected_frames` (past
    /// `unknown-call-records-per-second` on their connection).
    let rejectedFramesNotRecorded = Counter(label: "voicemeter_rejected_frames_unrecorded_total")
    /// Budget grants (issue 22): requests that got something, that wanted something and got
    /// nothing (the user's budget is spent or held by other nodes), and grants of dead holders
    /// removed after their lease; frames refused for now while their user's grant was empty and
    /// none could be asked for (the database away).
    let grantsTaken = Counter(label: "voicemeter_budget_grants_taken_total")
    let grantsRefused = Counter(label: "voicemeter_budget_grants_refused_total")
    let grantsExpired = Counter(label: "voicemeter_budget_grants_expired_total")
    let grantRequestsFailed = Counter(label: "voicemeter_budget_grant_requests_failed_total")
    let framesRefusedForGrant = Counter(label: "voicemeter_frames_refused_for_grant_total")
    /// Frames stored without a price in force (priced later by `voicemeter reprice`).
    let unpricedEvents = Counter(label: "voicemeter_unpriced_events_total")

    /// Counts an `error` answer by its code.
    func rejected(_ code: ProtocolErrorCode) { rejectedByCode[code]?.increment() }

    /// Counts what a server message signals (errors by code, warnings).
    func sent(_ message: ServerMessage) {
        switch message {
        case .error(let error): rejected(error.code)
        case .budgetWarning: budgetWarnings.increment()
        case .callAccepted, .callRejected, .ack, .budgetCutoff, .callSummary: break
        }
    }
}

/// What the ledger writers measure.
public struct LedgerMetrics: Sendable {
    let eventsCommitted = Counter(label: "voicemeter_events_committed_total")
    let batchEvents = Recorder(label: ServerMetrics.batchEventsLabel)
    let commitDuration = Timer(label: "voicemeter_commit_duration_seconds")
    /// From the oldest frame of a batch entering the queue to its commit; its ack follows at once.
    let ackLatency = Timer(label: "voicemeter_ack_latency_seconds")
    /// Events waiting in the writers' queues.
    let queueDepth = Meter(label: "voicemeter_writer_queue_events")
    /// Folds of the rollup journal into `cost_summaries`, and the journal rows they moved.
    let foldDuration = Timer(label: "voicemeter_rollup_fold_duration_seconds")
    let journalRowsFolded = Counter(label: "voicemeter_rollup_journal_rows_folded_total")
    /// New database connections after a lost one.
    let databaseReconnects = Counter(label: "voicemeter_database_reconnects_total")
    /// Commits that failed for a reason other than the data (the batch is kept and retried).
    let commitRetries = Counter(label: "voicemeter_ledger_commit_retries_total")
    /// Writers that cannot commit right now (each retrying its batch).
    let writersInOutage = Meter(label: "voicemeter_ledger_writers_in_outage")

    public init() {}
}
