import VoiceMeterDomain

/// What one simulated call did and what the server said about it.
public struct CallResult: Sendable {
    public enum Outcome: String, Sendable {
        case completed
        case cutOff = "cut_off"
        case rejected
        /// No answer from the server in time (see `detail`).
        case failed
    }

    /// The server's `call.summary`.
    public struct Summary: Sendable, Equatable {
        public var cost: ExactDecimal
        public var byService: [String: ExactDecimal]
        public var revenue: ExactDecimal?
        public var paymentFee: ExactDecimal?
        public var margin: ExactDecimal?
    }

    public var callID: String
    public var userID: String
    public var personaID: String
    public var outcome: Outcome = .failed
    /// The rejection reason, or why the call failed.
    public var detail: String?
    /// Distinct frames (seqs) sent; each must be stored exactly once.
    public var framesSent = 0
    public var framesAcknowledged = 0
    /// The highest seq the server acknowledged: every frame up to it must be stored.
    public var acknowledgedThroughSeq: Int64 = 0
    /// Extra copies of frames sent on purpose (`duplicates`).
    public var duplicatesSent = 0
    /// Frames sent after `budget.cutoff` arrived (the usage up to the hang-up).
    public var seqsAfterCutoff: [Int64] = []
    public var cutoffScope: BudgetScope?
    /// `budget.warning` messages received for the call.
    public var warnings = 0
    public var summary: Summary?
}

/// Everything a run produced, before it is checked against the database.
public struct SimulationResult: Sendable {
    public var options: SimulationOptions
    public var calls: [CallResult]
    public var elapsed: Duration
    /// Time from `send` to the ack that covered the frame, for every acknowledged frame, sorted.
    public var ackLatencies: [Duration]
    /// `error` frames received, by code.
    public var errorsByCode: [String: Int]
    /// The first few error messages, for the report.
    public var errorSamples: [String]
    /// Connections re-established after a drop.
    public var reconnects: Int
    /// Server messages the client could not read.
    public var unreadableMessages: Int

    public func count(_ outcome: CallResult.Outcome) -> Int { calls.count { $0.outcome == outcome } }
    public var framesSent: Int { calls.reduce(0) { $0 + $1.framesSent } }
    public var framesAcknowledged: Int { calls.reduce(0) { $0 + $1.framesAcknowledged } }
    public var duplicatesSent: Int { calls.reduce(0) { $0 + $1.duplicatesSent } }
    public var budgetWarnings: Int { calls.reduce(0) { $0 + $1.warnings } }
}
