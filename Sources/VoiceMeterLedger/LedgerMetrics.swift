import Metrics

/// What the ledger writers measure.
public struct LedgerMetrics: Sendable {
    /// The commit batch sizes' histogram (its buckets are set where metrics are bootstrapped).
    public static let batchEventsLabel = "voicemeter_commit_batch_events"

    package let eventsCommitted = Counter(label: "voicemeter_events_committed_total")
    package let batchEvents = Recorder(label: Self.batchEventsLabel)
    package let commitDuration = Timer(label: "voicemeter_commit_duration_seconds")
    /// From the oldest frame of a batch entering the queue to its commit; its ack follows at once.
    package let ackLatency = Timer(label: "voicemeter_ack_latency_seconds")
    /// Events waiting in the writers' queues.
    package let queueDepth = Meter(label: "voicemeter_writer_queue_events")
    /// Folds of the rollup journal into `cost_summaries`, and the journal rows they moved.
    package let foldDuration = Timer(label: "voicemeter_rollup_fold_duration_seconds")
    package let journalRowsFolded = Counter(label: "voicemeter_rollup_journal_rows_folded_total")
    /// New database connections after a lost one.
    package let databaseReconnects = Counter(label: "voicemeter_database_reconnects_total")
    /// Commits that failed for a reason other than the data (the batch is kept and retried).
    package let commitRetries = Counter(label: "voicemeter_ledger_commit_retries_total")
    /// Writers that cannot commit right now (each retrying its batch).
    package let writersInOutage = Meter(label: "voicemeter_ledger_writers_in_outage")

    public init() {}
}
