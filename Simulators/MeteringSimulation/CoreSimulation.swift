import MeteringCore
import VoiceMeterDomain

/// What one simulated run is made of.
public struct CoreSimulationOptions: Sendable {
    public var seed: UInt64
    /// Random steps before the run settles (no more faults) and is checked to the end.
    public var steps: Int
    public var nodes = 3
    public var calls: Int
    public var users = 3

    /// About one call per hundred steps (at least ten): a longer run plays more calls.
    public init(seed: UInt64, steps: Int) {
        self.seed = seed
        self.steps = steps
        calls = max(10, steps / 100)
    }
}

/// An invariant that failed: where, and how to see it again.
public struct InvariantViolation: Error, Sendable, CustomStringConvertible {
    public var seed: UInt64
    public var step: Int
    public var invariant: String
    public var detail: String
    public var steps: Int

    public var description: String {
        "seed \(seed), step \(step): \(invariant): \(detail)\n  replay: voicemeter-sim simulate --seed \(seed) --steps \(steps) --trace"
    }
}

/// What a run did, for the report.
public struct CoreSimulationStats: Sendable {
    public var framesStored = 0
    public var callsSummarized = 0
    public var callsRejected = 0
    public var cutoffs = 0
    public var overloaded = 0
    public var rateLimited = 0
    public var reconnects = 0
    public var crashes = 0
    public var limitChanges = 0
    public var conflictsAtCommit = 0
    /// Messages sent about a live call on a connection that did not start it.
    public var intrusions = 0
    /// Budget grant requests answered, and failed (the database away).
    public var grantsAnswered = 0
    public var grantsFailed = 0
    /// Lease renewals answered (one for all of a core's users that were due).
    public var renewals = 0

    public init() {}

    /// Adds another run's counts.
    public mutating func add(_ other: CoreSimulationStats) {
        framesStored += other.framesStored
        callsSummarized += other.callsSummarized
        callsRejected += other.callsRejected
        cutoffs += other.cutoffs
        overloaded += other.overloaded
        rateLimited += other.rateLimited
        reconnects += other.reconnects
        crashes += other.crashes
        limitChanges += other.limitChanges
        conflictsAtCommit += other.conflictsAtCommit
        intrusions += other.intrusions
        grantsAnswered += other.grantsAnswered
        grantsFailed += other.grantsFailed
        renewals += other.renewals
    }
}

/// Nodes running `MeteringCore` over one simulated ledger, driven by one seeded schedule of
/// client messages, deliveries, commits, faults and time: the same seed is the same run.
/// Invariants are checked after every step; the first violation stops the run.
public struct CoreSimulation {
    public let options: CoreSimulationOptions
    var random: SeededRandom
    var now: Timestamp
    var ledger = SimulatedLedger()
    var nodes: [Node] = []
    var clients: [Client] = []
    var connections: [Int: Connection] = [:]
    /// Calls a tick ended (abandoned, or closed while frames refused transiently never came back):
    /// their late frames are refused as documented.
    var endedBySilence: Set<String> = []
    var nextConnection = 1
    var step = 0
    var settling = false
    let prices: PriceBook
    let settings: MeteringSettings
    public internal(set) var stats = CoreSimulationStats()
    /// One line per step when tracing.
    public var trace: ((String) -> Void)?

    static let writerQueueEvents = 2
    static let abandonAfterSeconds: Int64 = 120
    /// Frames a client sends before it waits for an ack (a pipeline's bounded buffer): one
    /// under budget pressure, where the overshoot a window allows is what is measured.
    var clientWindow: Int { sharedBudget ? 1 : 2 }
    /// The costliest frame the schedule sends (amount 4 at 0.01).
    static let frameCostMaximum = ExactDecimal("0.04")!
    /// Spend a user's limits must bound from some point on, by user, scope and period: what was
    /// committed or granted when a limit was lowered, or while spend was not held by grants.
    var spendFloors: [String: ExactDecimal] = [:]
    /// The most calls of a user admitted and live at once: each may have a window of frames on its way.
    var liveCallsMax: [String: Int] = [:]
    /// One seed in four puts one user's budget under pressure: all calls are that user's, on
    /// every node at once, longer, against a fixed $1.00 month limit (no limit changes) with a
    /// $0.20 expected call cost (about five calls admitted at once). Their demand is many times
    /// the limit: nodes that each spent a whole budget would show.
    let sharedBudget: Bool
    var users: Int { sharedBudget ? 1 : options.users }

    struct Node {
        var core: MeteringCore
        /// Numbers the node's lives: a restarted node is a new grant holder.
        var life = 0
        var writerQueue: [WriterItem] = []
        var registrations: [(start: CallStart, startedAt: Timestamp, asOf: Timestamp)] = []
        var refreshes: [(users: [String], asOf: Timestamp)] = []
        /// Grant requests and lease renewals, run in order like the registry's queue.
        var grantRequests: [GrantWork] = []
        var nextTick: Timestamp
    }

    enum WriterItem {
        case event(UsageEvent)
        case ending(CallEnding)
    }

    enum GrantWork {
        case take(GrantRequest)
        case renew(GrantRenewal)
    }

    struct Connection {
        var node: Int
        var client: Int
        var toServer: [MeteringInput] = []
        var toClient: [ServerMessage] = []
    }

    struct Frame {
        var usage: MeteredUsage
        var variant: Int64
        /// Sent with a field the decoder refuses: answered `invalid_field` before metering.
        var malformed = false
    }

    struct Client {
        enum State { case idle, starting, active, done }
        var callID: String
        var userID: String
        var startedAt: Timestamp?
        var state = State.idle
        var connection: Int?
        var frames: [Int64: Frame] = [:]
        var nextSeq: Int64 = 1
        var unacked: Set<Int64> = []
        var highestAck: Int64 = 0
        var endSent = false
        var cutOff = false
        var summary: ExactDecimal?
        /// The connection the call was last accepted on.
        var acceptedOn: Int?
        /// The pipeline bug happened: a seq was sent again with other content.
        var reusedASeq = false
    }

    public init(_ options: CoreSimulationOptions) {
        self.options = options
        random = SeededRandom(seed: options.seed)
        // Ten minutes before a new month (and day) in UTC: rollovers happen inside most runs.
        now = Timestamp(rfc3339: "2027-01-31T23:50:00Z")!
        prices = PriceBook([PriceVersion(id: 1, key: PriceKey(service: "llm", operation: "op", unit: .requests),
                                         rule: .perUnit(unitPrice: ExactDecimal("0.01")!), effectiveFrom: Timestamp(microsecondsSinceEpoch: 0))])
        sharedBudget = options.seed % 4 == 0
        settings = MeteringSettings(defaults: BudgetPolicy(callLimit: ExactDecimal("0.20")!, dayLimit: nil,
                                                           monthLimit: ExactDecimal(sharedBudget ? "1.00" : "0.40")!),
                                    defaultCallCostEstimate: ExactDecimal(sharedBudget ? "0.20" : "0.01")!, tickSeconds: 30,
                                    abandonAfterSeconds: Self.abandonAfterSeconds)
        nodes = (0..<options.nodes).map { _ in Node(core: MeteringCore(settings: settings), nextTick: now.adding(seconds: 30)) }
        clients = (0..<options.calls).map { index in
            Client(callID: "C\(index % (options.calls - 1) + 1)", userID: "u\(index % (options.seed % 4 == 0 ? 1 : options.users) + 1)")
        }
    }

    /// Runs the schedule, then lets it settle; returns the first violation, if any.
    public mutating func run() -> InvariantViolation? {
        do {
            while step < options.steps {
                step += 1
                try takeStep()
            }
            settling = true
            for _ in 0..<(options.steps + 4_000) {
                step += 1
                try takeStep()
                if clients.allSatisfy({ $0.state == .done || $0.state == .idle }) && nodes.allSatisfy({ $0.writerQueue.isEmpty }) { break }
            }
            try checkAtRest()
            stats.framesStored = ledger.events.count
            return nil
        } catch let violation as InvariantViolation {
            return violation
        } catch {
            preconditionFailure("only invariants throw")
        }
    }
    // MARK: Helpers

    static func hash(_ callID: String, _ seq: Int64, _ variant: Int64) -> PayloadHash {
        var mixer = SeededRandom(seed: UInt64(bitPattern: seq &* 1_000_003 &+ variant))
        for byte in callID.utf8 { mixer = SeededRandom(seed: mixer.next() ^ UInt64(byte)) }
        let words = (mixer.next(), mixer.next())
        return PayloadHash { buffer in
            buffer.storeBytes(of: words.0, toByteOffset: 0, as: UInt64.self)
            buffer.storeBytes(of: words.1, toByteOffset: 8, as: UInt64.self)
        }
    }

    /// About one frame in 40 is data the database refuses (decided by its content, like a real data error).
    static func isBadData(_ hash: PayloadHash) -> Bool {
        hash.withUnsafeBytes { $0[0] } % 40 == 0
    }

    static func describe(_ input: MeteringInput) -> String {
        switch input {
        case .callStart(let start, let connection): "call.start \(start.callID) user \(start.userID) on \(connection)"
        case .usage(let frame, _, let connection): "usage \(frame.callID)#\(frame.seq) on \(connection)"
        case .callEnd(let end, let connection): "call.end \(end.callID) on \(connection)"
        case .submitted(let accepted): "submitted \(accepted)"
        case .refusedAtDecoding(let error, _): "refused at decoding \(error.callID ?? "-") seq \(error.seq ?? 0)"
        case .refusedTransiently(let callID, let seq, let connection): "rate_limited \(callID)#\(seq) on \(connection)"
        case .connectionClosed(let connection): "closed \(connection)"
        case .registered(let callID, let registration, _, _):
            switch registration {
            case .registered(let call): "registered \(callID): new \(call.isNew), stored \(call.committedEvents.map(\.stored.seq)), refused \(call.refusedFrames.keys.sorted()), generation \(call.generation)"
            case .belongsToAnotherUser: "registered \(callID): another user's"
            case .ended: "registered \(callID): ended"
            }
        case .registrationFailed(let callID, _): "registration failed \(callID)"
        case .committed(let commit): "committed \(commit.events.map(\.key)) conflicts \(commit.conflicts.sorted()) endings \(commit.endings.map { "\($0.ending.callID) \($0.ending.status) applied \($0.applied)" })"
        case .refusedByLedger(let event, _): "ledger refused \(event.key)"
        case .budgetsRefreshed(let snapshots, _): "refreshed \(snapshots.keys.sorted())"
        case .budgetSettingsChanged: "settings changed"
        case .grantAnswered(let request, let answer): "grant #\(request.number) \(request.userID) \(request.purpose): keep \(request.keep) want \(request.want) → held \(answer.held) extra \(answer.extra) short \(answer.shortScope?.rawValue ?? "-")"
        case .grantFailed(let request, _): "grant #\(request.number) \(request.userID) failed"
        case .grantsRenewed(let renewal, let renewed): "renewal #\(renewal.number) of \(renewal.userIDs): renewed \(renewed.sorted())"
        case .grantRenewalFailed(let renewal, _): "renewal #\(renewal.number) failed"
        case .releaseGrants: "release grants"
        case .tick: "tick"
        }
    }
}

extension SeededRandom {
    /// A value in `0..<bound`.
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }
}
