/// A call as the database knows it when a `call.start` arrives.
public struct RegisteredCall: Sendable {
    public var userID: String
    /// Whether this `call.start` created the call (`false`: a resumed call, admitted before).
    public var isNew: Bool
    /// The start fixed at first registration (it is part of every event's key).
    public var startedAt: Timestamp
    /// Events already committed for the call (a resumed call), oldest `seq` first.
    public var committedEvents: [CommittedEvent]
    /// Frames of the call refused for good, by seq, with the reason kept (`rejected_frames.reason`):
    /// the sender was told not to resend them.
    public var refusedFrames: [Int64: String]
    /// How many times the call was registered: an ending written by a copy of the call that lost
    /// its connection applies only while no later registration resumed the call elsewhere.
    public var generation: Int64

    public init(userID: String, isNew: Bool, startedAt: Timestamp, committedEvents: [CommittedEvent], refusedFrames: [Int64: String] = [:],
                generation: Int64 = 1) {
        self.userID = userID
        self.isNew = isNew
        self.startedAt = startedAt
        self.committedEvents = committedEvents
        self.refusedFrames = refusedFrames
        self.generation = generation
    }
}

/// A committed event, enough to rebuild a call's billing state and recognise resends.
public struct CommittedEvent: Sendable {
    public var stored: StoredUsageEvent
    public var totalCost: ExactDecimal?
    public var payloadHash: PayloadHash

    public init(stored: StoredUsageEvent, totalCost: ExactDecimal?, payloadHash: PayloadHash) {
        self.stored = stored
        self.totalCost = totalCost
        self.payloadHash = payloadHash
    }
}

/// What registering a `call.start` found.
public enum CallRegistration: Sendable {
    case registered(RegisteredCall)
    /// The call id already belongs to another user.
    case belongsToAnotherUser
    /// The call has ended (completed, cut off and ended, or abandoned): it is never reopened.
    case ended
}

/// The end of a call, written in the same transaction as the events before it.
public struct CallEnding: Sendable, Hashable {
    public var userID: String
    public var callID: String
    public var endedAt: Timestamp
    public var status: String
    /// Set when the ending is written by a copy of the call whose connection is gone: it applies
    /// only if the call was not registered again since (`RegisteredCall.generation`), so a node's
    /// stale copy never ends a call that moved on.
    public var onlyIfGeneration: Int64?

    public init(userID: String, callID: String, endedAt: Timestamp, status: String, onlyIfGeneration: Int64? = nil) {
        self.userID = userID
        self.callID = callID
        self.endedAt = endedAt
        self.status = status
        self.onlyIfGeneration = onlyIfGeneration
    }
}

/// A call ending as the ledger wrote it: whether it applied, and the call's cost from its stored events.
public struct EndedCall: Sendable, Hashable {
    public var ending: CallEnding
    /// `false` when the call had ended already or moved on (a stale copy's ending).
    public var applied: Bool
    /// The call's stored cost per service, by service name: what its summary reports.
    public var costByService: [ServiceCost]

    public init(ending: CallEnding, applied: Bool, costByService: [ServiceCost]) {
        self.ending = ending
        self.applied = applied
        self.costByService = costByService
    }
}

/// One service's part of a call's cost.
public struct ServiceCost: Sendable, Hashable {
    public var service: String
    public var cost: ExactDecimal

    public init(service: String, cost: ExactDecimal) {
        self.service = service
        self.cost = cost
    }
}
