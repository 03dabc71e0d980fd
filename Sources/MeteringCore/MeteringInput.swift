import VoiceMeterDomain

/// A client connection as metering knows it: the transport's connection number.
public struct ClientConnection: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: Int

    public init(_ rawValue: Int) {
        self.rawValue = rawValue
    }

    public var description: String { "conn-\(rawValue)" }
}

/// Everything that can happen to metering. The core reads no clock: each input comes with the
/// instant it is handled at.
public enum MeteringInput: Sendable {
    case callStart(CallStart, from: ClientConnection)
    /// A usage frame with the hash of its canonical content (`UsageFrame.canonicalContent`).
    case usage(UsageFrame, hash: PayloadHash, from: ClientConnection)
    case callEnd(CallEnd, from: ClientConnection)
    /// The ledger writer's answer to the `submit` action just performed: `false` when its queue was full.
    case submitted(accepted: Bool)
    /// A frame of the call was refused before metering saw it (`rate_limited`, naming call and seq).
    case refusedTransiently(callID: String, seq: Int64, from: ClientConnection)
    case connectionClosed(ClientConnection)
    /// The answer to a `register` action: the registration and the user's budget as of `asOf`.
    case registered(callID: String, CallRegistration, UserBudgetSnapshot, asOf: Timestamp)
    /// A `register` action failed (the database is away).
    case registrationFailed(callID: String, reason: String)
    /// The ledger committed these events and call endings.
    case committed(LedgerCommit)
    /// The ledger refused one event outright (a data error): it was not stored.
    case refusedByLedger(UsageEvent, reason: String)
    /// The answer to `refreshBudgets`: settings and committed spend of these users as of `asOf`.
    case budgetsRefreshed([String: UserBudgetSnapshot], asOf: Timestamp)
    /// `user_budget_settings` changed: reload every user with live calls now.
    case budgetSettingsChanged
    /// The budget tick (every `tickSeconds`).
    case tick
    /// The ledger's answer to a `takeGrant` action.
    case grantAnswered(GrantRequest, GrantAnswer)
    /// A usage frame of the call the decoder refused for good (`RejectedFrameReason(decoding:)`),
    /// named by the error's call and seq: its seq is settled, so the call's acks pass it.
    case refusedAtDecoding(ProtocolError, from: ClientConnection)
    /// A `takeGrant` action failed (the database is away): whether it was applied is unknown.
    case grantFailed(GrantRequest, reason: String)
    /// The ledger's answer to a `renewGrants` action: the users whose grant it extended.
    case grantsRenewed(GrantRenewal, renewed: Set<String>)
    /// A `renewGrants` action failed: whether it was applied is unknown (the leases count as before).
    case grantRenewalFailed(GrantRenewal, reason: String)
    /// The server stops: what each grant holds beyond the frames on their way goes back.
    case releaseGrants
}

/// What one ledger commit did, as metering needs it.
public struct LedgerCommit: Sendable {
    public var events: [UsageEvent]
    /// Keys already stored with different content (another node wrote that seq): not stored now.
    public var conflicts: Set<EventKey>
    public var endings: [EndedCall]

    public init(events: [UsageEvent], conflicts: Set<EventKey> = [], endings: [EndedCall] = []) {
        self.events = events
        self.conflicts = conflicts
        self.endings = endings
    }
}

/// What metering asks its environment to do, in order.
public enum MeteringAction: Sendable {
    case send(ServerMessage, to: ClientConnection)
    /// Queue the event with the call's ledger writer, then answer with `submitted(accepted:)` at once.
    case submit(UsageEvent)
    /// Queue the call's ending with its ledger writer (behind the call's events).
    case submitEnding(CallEnding)
    /// Register the call and read its user's budget as of `budgetsAsOf`; answered with
    /// `registered` or `registrationFailed`.
    case register(CallStart, startedAt: Timestamp, budgetsAsOf: Timestamp)
    /// Reload these users' settings and committed spend as of `asOf` (`paced`: may be spread over
    /// the first seconds of the tick); answered with `budgetsRefreshed`.
    case refreshBudgets(userIDs: [String], asOf: Timestamp, paced: Bool)
    case recordAlert(CostAlert)
    /// Set a live call's status; with `onlyIfGeneration`, only while no later registration resumed
    /// it (an admission refused late must not reject a copy admitted elsewhere meanwhile).
    case markCall(userID: String, callID: String, status: String, cutoffReason: String?, onlyIfGeneration: Int64? = nil)
    /// Keep a refused frame for audit (`rejected_frames`) with the reason.
    case recordRejectedFrame(UsageFrame, reason: RejectedFrameReason)
    /// Keep the seq of a frame the decoder refused (`rejected_frames`, the error as its payload).
    case recordUndecodedFrame(callID: String, seq: Int64, reason: RejectedFrameReason, error: ProtocolError)
    case evaluateQuotas(asOf: Timestamp)
    /// Set what this core holds of a user's budget in the ledger; answered with `grantAnswered`
    /// or `grantFailed` (requests of one core are performed in order).
    case takeGrant(GrantRequest)
    /// Extend the leases of this core's grants of these users; answered with `grantsRenewed` or
    /// `grantRenewalFailed` (in order with `takeGrant`).
    case renewGrants(GrantRenewal)
    /// The call's later messages go to this metering core (until `forgetRoute`).
    case pinRoute(callID: String)
    case forgetRoute(callID: String)
    /// Metering is done with one usage frame of the call (flow control counts frames on their way).
    case frameHandled(callID: String)
    case count(MeteringCounter)
    case log(MeteringLog)
}

/// Why a frame was kept in `rejected_frames`. All but `unknownCall` are refusals for good: a
/// resumed call counts those seqs as settled.
public enum RejectedFrameReason: String, Sendable, CaseIterable {
    case unknownCall = "unknown_call"
    case invalidAmount = "invalid_amount"
    case invalidTimestamp = "invalid_timestamp"
    case ledgerRefused = "ledger_refused"
    /// The decoder refused it: a field missing or malformed.
    case malformed = "malformed"

    /// The error code the sender was answered with.
    public var errorCode: ProtocolErrorCode {
        switch self {
        case .unknownCall: .unknownCall
        case .invalidAmount: .invalidAmount
        case .invalidTimestamp: .invalidTimestamp
        case .ledgerRefused: .internal
        case .malformed: .invalidField
        }
    }

    /// The reason a usage frame the decoder refused with `code` is refused for good; `nil` for a
    /// refusal that is not about the frame's content (rate limited, too large, not JSON).
    public init?(decoding code: ProtocolErrorCode) {
        switch code {
        case .invalidAmount: self = .invalidAmount
        case .invalidTimestamp: self = .invalidTimestamp
        case .missingField, .invalidField, .invalidUnit: self = .malformed
        default: return nil
        }
    }
}

public enum MeteringCounter: Sendable, Hashable {
    case unpricedEvent
    case budgetCutoff
    /// A `call.start` refused: its connection carries `liveCallsPerConnectionMax` calls.
    case callRefusedForConnectionLimit
    /// A frame for an unknown call answered but not recorded (`unknownCallRecordsPerConnectionPerSecond`).
    case rejectedFrameNotRecorded
    /// A frame refused for now while its user's grant had nothing left and none could be asked
    /// for (the database away: `overloaded`).
    case frameRefusedForGrant
}

/// A log line about a call.
public struct MeteringLog: Sendable {
    public enum Level: Sendable { case debug, info, warning }
    public var level: Level
    public var message: String
    public var callID: String
    public var userID: String
    public var connection: ClientConnection?
    public var details: [(String, String)]
}
