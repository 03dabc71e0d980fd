import MeteringCore
import Testing
import VoiceMeterDomain

/// One metering core driven by hand: a clock that moves only when told, a price of $0.10 a
/// request, and the ledger answered by the test. Budget grants are answered at once from
/// `grantRoom` (what this core may hold of each user's budget; `nil`: no limit), unless
/// `answersGrants` is off: then they wait in `grantRequests` for `answerGrant`.
struct CoreHarness {
    var core: MeteringCore
    var now: Timestamp
    let prices: PriceBook
    let connection = ClientConnection(1)
    /// Everything the core asked for, in order.
    var actions: [MeteringAction] = []
    /// Whether the ledger writer takes the next submitted events.
    var writerHasRoom = true
    /// Events submitted and not yet committed, in order.
    var inFlight: [UsageEvent] = []
    var generation: Int64 = 1
    var grantRoom: ExactDecimal?
    var answersGrants = true
    var grantRequests: [GrantRequest] = []
    /// Users whose grant the ledger no longer holds when the core renews its leases.
    var leasesGoneAtLedger: Set<String> = []

    /// 2026-03-10T12:00:00Z: the tests never read today's date.
    static let start = Timestamp(microsecondsSinceEpoch: 1_773_144_000_000_000)

    init(policy: BudgetPolicy = BudgetPolicy(callLimit: nil, dayLimit: nil, monthLimit: nil), abandonAfterSeconds: Int64 = 600,
         configure: (inout MeteringSettings) -> Void = { _ in }) {
        var settings = MeteringSettings(defaults: policy, defaultCallCostEstimate: ExactDecimal("0.50")!, tickSeconds: 30,
                                        abandonAfterSeconds: abandonAfterSeconds)
        configure(&settings)
        core = MeteringCore(settings: settings)
        now = Self.start
        prices = PriceBook([PriceVersion(id: 1, key: PriceKey(service: "llm", operation: "chat", unit: .requests),
                                         rule: .perUnit(unitPrice: ExactDecimal("0.10")!), effectiveFrom: Timestamp(microsecondsSinceEpoch: 0))])
    }

    /// Feeds one input; answers `submit` as the writer would and returns the actions it caused.
    @discardableResult
    mutating func feed(_ input: MeteringInput) -> [MeteringAction] {
        var produced = core.handle(input, at: now, prices: prices)
        var next = 0
        while next < produced.count {
            if case .submit(let event) = produced[next] {
                if writerHasRoom { inFlight.append(event) }
                produced += core.handle(.submitted(accepted: writerHasRoom), at: now, prices: prices)
            }
            if case .takeGrant(let request) = produced[next] {
                if answersGrants { produced += core.handle(.grantAnswered(request, grantAnswer(to: request)), at: now, prices: prices) }
                else { grantRequests.append(request) }
            }
            if case .renewGrants(let renewal) = produced[next] {
                produced += core.handle(.grantsRenewed(renewal, renewed: Set(renewal.userIDs).subtracting(leasesGoneAtLedger)), at: now, prices: prices)
            }
            next += 1
        }
        actions += produced
        return produced
    }

    /// Starts and admits a call (new, or resumed with `committed` seqs stored before).
    @discardableResult
    mutating func startCall(_ callID: String = "C1", user: String = "u1", isNew: Bool = true, committed: [Int64] = [],
                            snapshot: UserBudgetSnapshot = UserBudgetSnapshot(settings: BudgetSettings(), daySpent: .zero, monthSpent: .zero),
                            on connection: ClientConnection? = nil) -> [MeteringAction] {
        var produced = feed(.callStart(CallStart(callID: callID, userID: user, startedAt: now), from: connection ?? self.connection))
        let events = committed.map { seq in
            CommittedEvent(stored: StoredUsageEvent(seq: seq, usage: usage(at: now), priceID: 1), totalCost: ExactDecimal("0.10")!,
                           payloadHash: Self.hash(seq))
        }
        produced += feed(.registered(callID: callID, .registered(RegisteredCall(userID: user, isNew: isNew, startedAt: now, committedEvents: events,
                                                                               generation: generation)), snapshot, asOf: now))
        return produced
    }

    func usage(at instant: Timestamp, requests: Int = 1) -> MeteredUsage {
        MeteredUsage(service: "llm", operation: "chat", unit: .requests, amount: ExactDecimal(requests), occurredAt: instant)
    }

    /// A frame costing $0.10 per request, stamped `ts` (default: now).
    @discardableResult
    mutating func send(_ seq: Int64, call: String = "C1", requests: Int = 1, ts: Timestamp? = nil, content: Int64? = nil,
                       on connection: ClientConnection? = nil) -> [MeteringAction] {
        feed(.usage(UsageFrame(callID: call, seq: seq, usage: usage(at: ts ?? now, requests: requests)), hash: Self.hash(content ?? seq),
                    from: connection ?? self.connection))
    }

    /// Commits the in-flight events of these seqs (all of them by default); `conflicting` ones were stored by another node.
    @discardableResult
    mutating func commit(_ seqs: Set<Int64>? = nil, conflicting: Set<Int64> = [], endings: [EndedCall] = []) -> [MeteringAction] {
        let taken = inFlight.filter { seqs?.contains($0.key.seq) ?? true }
        inFlight.removeAll { seqs?.contains($0.key.seq) ?? true }
        return feed(.committed(LedgerCommit(events: taken, conflicts: Set(taken.filter { conflicting.contains($0.key.seq) }.map(\.key)),
                                            endings: endings)))
    }

    mutating func advance(seconds: Int64) { now = now.adding(seconds: seconds) }

    /// What the ledger gives: all that is wanted, or what `grantRoom` leaves.
    func grantAnswer(to request: GrantRequest) -> GrantAnswer {
        var extra = request.want
        if let grantRoom { extra = min(extra, max(.zero, (try? grantRoom.subtracting(request.keep)) ?? .zero)) }
        if extra < request.minimum { extra = .zero }
        return GrantAnswer(held: (try? request.keep.adding(extra)) ?? request.keep, extra: extra, daySpent: .zero, monthSpent: .zero,
                           othersHeld: .zero, shortScope: extra < request.want ? .month : nil, expired: 0)
    }

    /// Answers the oldest waiting grant request (`nil` answer: it failed).
    @discardableResult
    mutating func answerGrant(failing: Bool = false) -> [MeteringAction] {
        let request = grantRequests.removeFirst()
        return feed(failing ? .grantFailed(request, reason: "database away") : .grantAnswered(request, grantAnswer(to: request)))
    }

    static func hash(_ content: Int64) -> PayloadHash {
        PayloadHash { buffer in buffer.storeBytes(of: content, as: Int64.self) }
    }
}

extension [MeteringAction] {
    /// The messages sent, in order.
    var sent: [ServerMessage] { compactMap { if case .send(let message, _) = $0 { message } else { nil } } }
    var acks: [Int64] { sent.compactMap { if case .ack(_, let seq) = $0 { seq } else { nil } } }
    /// Audit rows asked for, and frames counted instead.
    var rejectedFramesRecorded: Int { count { if case .recordRejectedFrame = $0 { true } else { false } } }
    var rejectedFramesCounted: Int { count { if case .count(.rejectedFrameNotRecorded) = $0 { true } else { false } } }
    /// The connections messages were sent to, in order.
    var recipients: [ClientConnection] { compactMap { if case .send(_, let connection) = $0 { connection } else { nil } } }
    var errors: [ProtocolError] { sent.compactMap { if case .error(let error) = $0 { error } else { nil } } }
    var cutoffs: [BudgetScope] { sent.compactMap { if case .budgetCutoff(_, let scope, _, _) = $0 { scope } else { nil } } }
    var endings: [CallEnding] { compactMap { if case .submitEnding(let ending) = $0 { ending } else { nil } } }
    var submitted: [EventKey] { compactMap { if case .submit(let event) = $0 { event.key } else { nil } } }
    var rejections: [String] { sent.compactMap { if case .callRejected(_, let reason, _, _) = $0 { reason } else { nil } } }
    var marks: [String] { compactMap { if case .markCall(_, _, let status, _, _) = $0 { status } else { nil } } }
    var grantRequests: [GrantRequest] { compactMap { if case .takeGrant(let request) = $0 { request } else { nil } } }
    var grantRenewals: [GrantRenewal] { compactMap { if case .renewGrants(let renewal) = $0 { renewal } else { nil } } }
}
