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
    private var random: SeededRandom
    private var now: Timestamp
    private var ledger = SimulatedLedger()
    private var nodes: [Node] = []
    private var clients: [Client] = []
    private var connections: [Int: Connection] = [:]
    /// Calls a tick ended (abandoned, or closed while frames refused transiently never came back):
    /// their late frames are refused as documented.
    private var endedBySilence: Set<String> = []
    private var nextConnection = 1
    private var step = 0
    private var settling = false
    private let prices: PriceBook
    private let settings: MeteringSettings
    public private(set) var stats = CoreSimulationStats()
    /// One line per step when tracing.
    public var trace: ((String) -> Void)?

    private static let writerQueueEvents = 2
    private static let abandonAfterSeconds: Int64 = 120
    /// Frames a client sends before it waits for an ack (a pipeline's bounded buffer): one
    /// under budget pressure, where the overshoot a window allows is what is measured.
    private var clientWindow: Int { sharedBudget ? 1 : 2 }
    /// The costliest frame the schedule sends (amount 4 at 0.01).
    static let frameCostMaximum = ExactDecimal("0.04")!
    /// Spend a user's limits must bound from some point on, by user, scope and period: what was
    /// committed or granted when a limit was lowered, or while spend was not held by grants.
    private var spendFloors: [String: ExactDecimal] = [:]
    /// The most calls of a user admitted and live at once: each may have a window of frames on its way.
    private var liveCallsMax: [String: Int] = [:]
    /// One seed in four puts one user's budget under pressure: all calls are that user's, on
    /// every node at once, longer, against a fixed $1.00 month limit (no limit changes) with a
    /// $0.20 expected call cost (about five calls admitted at once). Their demand is many times
    /// the limit: nodes that each spent a whole budget would show.
    private let sharedBudget: Bool
    private var users: Int { sharedBudget ? 1 : options.users }

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

    // MARK: The schedule

    private mutating func takeStep() throws {
        now = now.adding(milliseconds: Int64(random.below(400)))
        let roll = random.below(1_000)
        switch roll {
        case 0..<60: startCall()
        case 60..<240: sendFrame()
        case 240..<290: resendUnacknowledged()
        case 290..<296: sendConflictingFrame()
        case 295..<330: endCall()
        case 330..<560: try deliverToServer()
        case 560..<760: try deliverToClient()
        case 760..<860: try flushWriter()
        case 860..<900: try completeRegistration()
        case 900..<915: try completeRefresh()
        case 915..<950: try completeGrant()
        case 950..<965: dropConnection()
        case 965..<985: try reconnect()
        case 985..<988: crashNode()
        case 988..<994: try changeLimits()
        case 994..<997: intrude()
        default: now = now.adding(seconds: Int64(random.below(45)))
        }
        try runTicks()
        try checkInvariants()
    }

    private var faultsAllowed: Bool { !settling }

    private mutating func startCall() {
        // A call id is reused (the last client's is the first's) only once the call it named is over.
        let live = Set(clients.filter { $0.state == .starting || $0.state == .active }.map(\.callID))
        guard let index = clients.indices.filter({ clients[$0].state == .idle && !live.contains(clients[$0].callID) }).randomElement(using: &random)
        else { return }
        clients[index].startedAt = now
        clients[index].state = .starting
        openConnection(for: index)
    }

    /// Opens a connection to a random node and sends the call's start, its unacknowledged frames in seq order, and its end if it was sent.
    private mutating func openConnection(for index: Int) {
        let id = nextConnection
        nextConnection += 1
        var connection = Connection(node: random.below(nodes.count), client: index)
        let client = clients[index]
        connection.toServer.append(.callStart(CallStart(callID: client.callID, userID: client.userID, startedAt: client.startedAt),
                                              from: ClientConnection(id)))
        for seq in client.unacked.sorted() { connection.toServer.append(usage(of: index, seq: seq, connection: id)) }
        if client.endSent { connection.toServer.append(.callEnd(CallEnd(callID: client.callID, endedAt: nil), from: ClientConnection(id))) }
        connections[id] = connection
        clients[index].connection = id
    }

    private func usage(of index: Int, seq: Int64, connection: Int) -> MeteringInput {
        let client = clients[index]
        let frame = client.frames[seq]!
        return .usage(UsageFrame(callID: client.callID, seq: seq, usage: frame.usage),
                      hash: Self.hash(client.callID, seq, frame.variant), from: ClientConnection(connection))
    }

    /// A new frame of a call not ended nor cut off, while fewer than `clientWindow` wait for their ack.
    private mutating func sendFrame() {
        guard let index = clients.indices.filter({ [.starting, .active].contains(clients[$0].state) && !clients[$0].endSent && !clients[$0].cutOff
                                                   && clients[$0].unacked.count < clientWindow && clients[$0].connection != nil })
            .randomElement(using: &random)
        else { return }
        let seq = clients[index].nextSeq
        clients[index].nextSeq += 1
        // Now and then the pipeline's clock is off by more than the server allows.
        let skew: Int64 = faultsAllowed && random.below(40) == 0 ? 90 : Int64(random.below(20)) - 10
        let service = seq % 5 == 0 ? "unpriced" : "llm"
        clients[index].frames[seq] = Frame(usage: MeteredUsage(service: service, operation: "op", unit: .requests,
                                                               amount: ExactDecimal(1 + Int(seq % 3)), occurredAt: now.adding(seconds: skew)),
                                           variant: 0, malformed: faultsAllowed && random.below(50) == 0)
        clients[index].unacked.insert(seq)
        let connection = clients[index].connection!
        let message = usage(of: index, seq: seq, connection: connection)
        connections[connection]?.toServer.append(message)
    }

    private mutating func resendUnacknowledged() {
        guard let index = clients.indices.filter({ clients[$0].connection != nil && !clients[$0].unacked.isEmpty && clients[$0].state != .done })
            .randomElement(using: &random), let seq = clients[index].unacked.sorted().randomElement(using: &random)
        else { return }
        let connection = clients[index].connection!
        let message = usage(of: index, seq: seq, connection: connection)
        connections[connection]?.toServer.append(message)
    }

    /// A pipeline bug: the same seq sent again with other content.
    private mutating func sendConflictingFrame() {
        guard faultsAllowed, let index = clients.indices.filter({ clients[$0].connection != nil && !clients[$0].frames.isEmpty && clients[$0].state != .done })
            .randomElement(using: &random),
            // Mostly a frame not acknowledged yet: it may still be on its way on another node.
            let seq = (clients[index].unacked.isEmpty ? Array(clients[index].frames.keys) : Array(clients[index].unacked)).sorted().randomElement(using: &random)
        else { return }
        var frame = clients[index].frames[seq]!
        frame.variant += 1
        clients[index].reusedASeq = true
        frame.usage.amount = (try? frame.usage.amount.adding(ExactDecimal(1))) ?? frame.usage.amount
        let client = clients[index]
        connections[client.connection!]?.toServer.append(.usage(UsageFrame(callID: client.callID, seq: seq, usage: frame.usage),
                                                                hash: Self.hash(client.callID, seq, frame.variant),
                                                                from: ClientConnection(client.connection!)))
    }

    /// A connection that knows another client's live call_id sends usage (with seqs the call has
    /// not used yet, or its unacknowledged ones) or call.end for it, without call.start.
    private mutating func intrude() {
        guard faultsAllowed,
              let victim = clients.indices.filter({ clients[$0].state == .active }).randomElement(using: &random),
              let intruder = clients.indices.filter({ $0 != victim && clients[$0].callID != clients[victim].callID && clients[$0].connection != nil })
                  .randomElement(using: &random)
        else { return }
        stats.intrusions += 1
        let id = clients[intruder].connection!
        let callID = clients[victim].callID
        if random.below(5) == 0 {
            connections[id]?.toServer.append(.callEnd(CallEnd(callID: callID, endedAt: nil), from: ClientConnection(id)))
            return
        }
        let seq = Int64(clients[victim].frames.count + 1 + random.below(3)) - Int64(random.below(2) * min(clients[victim].unacked.count, 1))
        let usage = MeteredUsage(service: "llm", operation: "op", unit: .requests, amount: ExactDecimal(7), occurredAt: now)
        connections[id]?.toServer.append(.usage(UsageFrame(callID: callID, seq: max(seq, 1), usage: usage),
                                                hash: Self.hash(callID, max(seq, 1), Self.intruderVariant), from: ClientConnection(id)))
    }

    /// The content variant of an intruder's frames: none may ever be stored.
    static let intruderVariant: Int64 = 500

    private mutating func endCall() {
        let candidates = clients.indices.filter { index in
            let client = clients[index]
            return client.state == .active && !client.endSent && client.connection != nil && client.acceptedOn == client.connection
                && (client.cutOff || client.nextSeq > (sharedBudget ? 25 : 6) || settling)
        }
        guard let index = candidates.randomElement(using: &random) else { return }
        clients[index].endSent = true
        let connection = clients[index].connection!
        connections[connection]?.toServer.append(.callEnd(CallEnd(callID: clients[index].callID, endedAt: nil), from: ClientConnection(connection)))
    }

    private mutating func deliverToServer() throws {
        guard let id = connections.keys.sorted().filter({ !connections[$0]!.toServer.isEmpty }).randomElement(using: &random) else { return }
        let input = connections[id]!.toServer.removeFirst()
        let node = connections[id]!.node
        // A frame the decoder refuses (a malformed field): named, and handed to metering, which
        // answers it and settles its seq when the connection carries the call.
        if case .usage(let frame, _, let connection) = input, clients[connections[id]!.client].frames[frame.seq]?.malformed == true {
            try feed(node, .refusedAtDecoding(ProtocolError(.invalidField, "'unit' is malformed", callID: frame.callID, seq: frame.seq), from: connection))
            return
        }
        // The transport's rate limit: refused before metering, named, answered by the socket.
        if faultsAllowed, case .usage(let frame, _, _) = input, random.below(12) == 0 {
            stats.rateLimited += 1
            connections[id]!.toClient.append(.error(ProtocolError(.rateLimited, "rate limited", callID: frame.callID, seq: frame.seq)))
            try feed(node, .refusedTransiently(callID: frame.callID, seq: frame.seq, from: ClientConnection(id)))
            return
        }
        try feed(node, input)
    }

    private mutating func deliverToClient() throws {
        guard let id = connections.keys.sorted().filter({ !connections[$0]!.toClient.isEmpty }).randomElement(using: &random) else { return }
        let message = connections[id]!.toClient.removeFirst()
        try receive(message, client: connections[id]!.client)
    }

    private mutating func flushWriter() throws {
        guard let index = nodes.indices.filter({ !nodes[$0].writerQueue.isEmpty }).randomElement(using: &random) else { return }
        let count = min(nodes[index].writerQueue.count, 1 + random.below(4))
        let items = Array(nodes[index].writerQueue.prefix(count))
        var events: [UsageEvent] = []
        var endings: [CallEnding] = []
        var refused: [UsageEvent] = []
        for item in items {
            switch item {
            // A data error belongs to the content: every writer that tries it is refused.
            case .event(let event) where Self.isBadData(event.payloadHash): refused.append(event)
            case .event(let event): events.append(event)
            case .ending(let ending): endings.append(ending)
            }
        }
        for event in refused { try feed(index, .refusedByLedger(event, reason: "simulated data error")) }
        if let intruded = events.first(where: { $0.payloadHash == Self.hash($0.key.callID, $0.key.seq, Self.intruderVariant) }) {
            throw violation("only the connection that started or resumed a call speaks for it", "\(intruded.key) from a connection that did not start it is being stored")
        }
        // Another node stored one of these seqs first, with other content (a pipeline that sent both).
        if faultsAllowed, random.below(40) == 0, var other = events.first, ledger.events[other.key] == nil {
            other.payloadHash = Self.hash(other.key.callID, other.key.seq, 99)
            _ = ledger.commit([other], endings: [])
        }
        let commit = ledger.commit(events, endings: endings)
        stats.conflictsAtCommit += commit.conflicts.count
        // A commit whose reply was lost: stored, and retried by the writer.
        if faultsAllowed, random.below(10) == 0 { return }
        nodes[index].writerQueue.removeFirst(count)
        try feed(index, .committed(commit))
    }

    private mutating func completeRegistration() throws {
        guard let index = nodes.indices.filter({ !nodes[$0].registrations.isEmpty }).randomElement(using: &random) else { return }
        let pending = nodes[index].registrations.removeFirst()
        if faultsAllowed, random.below(10) == 0 {
            try feed(index, .registrationFailed(callID: pending.start.callID, reason: "simulated outage"))
            return
        }
        let (registration, snapshot) = ledger.register(pending.start, startedAt: pending.startedAt, asOf: pending.asOf)
        try feed(index, .registered(callID: pending.start.callID, registration, snapshot, asOf: pending.asOf))
    }

    /// The ledger answers a node's oldest grant request or renewal (they run in order, like the registry's queue).
    private mutating func completeGrant() throws {
        guard let index = nodes.indices.filter({ !nodes[$0].grantRequests.isEmpty }).randomElement(using: &random) else { return }
        let work = nodes[index].grantRequests.removeFirst()
        let holder = "node\(index)/\(nodes[index].life)"
        let fault = faultsAllowed ? random.below(20) : 20
        switch work {
        case .take(let request):
            if fault == 0 {
                stats.grantsFailed += 1
                try feed(index, .grantFailed(request, reason: "simulated outage"))
                return
            }
            let answer = ledger.takeGrant(request, holder: holder, now: now)
            // Applied, and the answer lost with the connection.
            if fault == 1 {
                stats.grantsFailed += 1
                try feed(index, .grantFailed(request, reason: "simulated lost answer"))
                return
            }
            stats.grantsAnswered += 1
            try feed(index, .grantAnswered(request, answer))
        case .renew(let renewal):
            if fault == 0 {
                try feed(index, .grantRenewalFailed(renewal, reason: "simulated outage"))
                return
            }
            let renewed = ledger.renewGrants(renewal, holder: holder, now: now)
            if fault == 1 {
                try feed(index, .grantRenewalFailed(renewal, reason: "simulated lost answer"))
                return
            }
            stats.renewals += 1
            try feed(index, .grantsRenewed(renewal, renewed: renewed))
        }
    }

    private mutating func completeRefresh() throws {
        guard let index = nodes.indices.filter({ !nodes[$0].refreshes.isEmpty }).randomElement(using: &random) else { return }
        let pending = nodes[index].refreshes.removeFirst()
        var snapshots: [String: UserBudgetSnapshot] = [:]
        for user in pending.users { snapshots[user] = ledger.snapshot(user, asOf: pending.asOf) }
        try feed(index, .budgetsRefreshed(snapshots, asOf: pending.asOf))
    }

    private mutating func dropConnection() {
        guard faultsAllowed, let id = connections.keys.sorted().randomElement(using: &random) else { return }
        close(id)
    }

    private mutating func close(_ id: Int) {
        guard let connection = connections.removeValue(forKey: id) else { return }
        if clients[connection.client].connection == id { clients[connection.client].connection = nil }
        try? feed(connection.node, .connectionClosed(ClientConnection(id)))
    }

    private mutating func reconnect() throws {
        guard let index = clients.indices.filter({ [.starting, .active].contains(clients[$0].state) && clients[$0].connection == nil })
            .randomElement(using: &random)
        else { return }
        stats.reconnects += 1
        openConnection(for: index)
    }

    /// A node dies and restarts empty: its writer queue, pending work and connections are gone.
    private mutating func crashNode() {
        guard faultsAllowed else { return }
        let index = random.below(nodes.count)
        trace?("step \(step) node \(index) crashes")
        stats.crashes += 1
        for id in connections.keys.sorted().filter({ connections[$0]!.node == index }) {
            if let client = connections.removeValue(forKey: id)?.client, clients[client].connection == id { clients[client].connection = nil }
        }
        nodes[index] = Node(core: MeteringCore(settings: settings), life: nodes[index].life + 1, nextTick: now.adding(seconds: 30))
    }

    private mutating func changeLimits() throws {
        guard faultsAllowed, !sharedBudget else { return }
        let user = "u\(random.below(users) + 1)"
        let money = [nil, "0.05", "0.10", "0.15", "0.30", "0.60"].map { $0.flatMap { ExactDecimal($0) } }
        // What was committed or granted under the old limits is spent whatever the new ones say.
        raiseSpendFloors(of: user)
        ledger.settings[user] = BudgetSettings(callLimit: money[random.below(money.count)], dayLimit: money[random.below(money.count)],
                                               monthLimit: money[random.below(money.count)], autoCutoff: random.below(5) != 0)
        stats.limitChanges += 1
        for index in nodes.indices { try feed(index, .budgetSettingsChanged) }
    }

    private mutating func runTicks() throws {
        for index in nodes.indices where nodes[index].nextTick <= now {
            nodes[index].nextTick = now.adding(seconds: 30)
            try feed(index, .tick)
        }
    }

    // MARK: The node's actions

    /// Feeds one input to a node's core and performs what it returns, as the shard would.
    private mutating func feed(_ index: Int, _ input: MeteringInput) throws {
        trace?("step \(step) node \(index) ← \(Self.describe(input))")
        var actions = nodes[index].core.handle(input, at: now, prices: prices)
        var next = 0
        while next < actions.count {
            let action = actions[next]
            next += 1
            switch action {
            case .send(let message, let connection):
                trace?("  → \(connection): \(message.json)")
                if case .budgetCutoff = message { stats.cutoffs += 1 }
                if connections[connection.rawValue]?.node == index { connections[connection.rawValue]!.toClient.append(message) }
            case .submit(let event):
                let queued = nodes[index].writerQueue.count { if case .event = $0 { true } else { false } }
                let accepted = queued < Self.writerQueueEvents
                if accepted { nodes[index].writerQueue.append(.event(event)) } else { stats.overloaded += 1 }
                actions += nodes[index].core.handle(.submitted(accepted: accepted), at: now, prices: prices)
            case .submitEnding(let ending):
                nodes[index].writerQueue.append(.ending(ending))
                if case .tick = input { endedBySilence.insert(ending.callID) }
            case .register(let start, let startedAt, let asOf): nodes[index].registrations.append((start, startedAt, asOf))
            case .refreshBudgets(let users, let asOf, _): nodes[index].refreshes.append((users, asOf))
            case .takeGrant(let request): nodes[index].grantRequests.append(.take(request))
            case .renewGrants(let renewal): nodes[index].grantRequests.append(.renew(renewal))
            case .markCall(_, let callID, let status, _, let generation): ledger.mark(callID, status: status, onlyIfGeneration: generation)
            case .recordUndecodedFrame(let callID, let seq, let reason, _):
                if ledger.refused[callID]?[seq] == nil { ledger.refused[callID, default: [:]][seq] = reason.rawValue }
            case .recordRejectedFrame(let frame, let reason):
                if reason != .unknownCall, ledger.refused[frame.callID]?[frame.seq] == nil { ledger.refused[frame.callID, default: [:]][frame.seq] = reason.rawValue }
            case .recordAlert, .evaluateQuotas, .pinRoute, .forgetRoute, .frameHandled, .count, .log: break
            }
        }
    }

    // MARK: The pipeline's side

    private mutating func receive(_ message: ServerMessage, client index: Int) throws {
        // An intruder's frames got their errors; anything else about another's call is a leak.
        if let callID = Self.callID(of: message), callID != clients[index].callID {
            guard case .error = message else {
                throw violation("only the connection that started or resumed a call hears about it",
                                "\(callID): \(message) reached the connection of \(clients[index].callID)")
            }
            return
        }
        switch message {
        case .callAccepted:
            if clients[index].state == .starting { clients[index].state = .active }
            clients[index].acceptedOn = clients[index].connection
            // Frames refused while the call was not started here are sent again, in seq order,
            // and then the end, if it was sent.
            if let id = clients[index].connection {
                for seq in clients[index].unacked.sorted() {
                    let message = usage(of: index, seq: seq, connection: id)
                    connections[id]?.toServer.append(message)
                }
                if clients[index].endSent {
                    connections[id]?.toServer.append(.callEnd(CallEnd(callID: clients[index].callID, endedAt: nil), from: ClientConnection(id)))
                }
            }
        case .callRejected:
            clients[index].state = .done
            stats.callsRejected += 1
            if let id = clients[index].connection { close(id) }
        case .ack(let callID, let seq):
            try checkAcknowledged(callID, through: seq)
            if seq < clients[index].highestAck {
                throw violation("acks never decrease", "\(callID): ack \(seq) after ack \(clients[index].highestAck)")
            }
            clients[index].highestAck = seq
            clients[index].unacked = clients[index].unacked.filter { $0 > seq }
        case .error(let error):
            guard let seq = error.seq else {
                // call.start did not go through (the database was away): send it again.
                if error.code == .overloaded { sendCallStartAgain(index) }
                return
            }
            switch error.code {
            case .overloaded, .rateLimited: break  // kept and sent again
            case .unknownCall:
                // The call was not started on this connection (its start failed): start it again.
                // Accepted here and ended, the call is over.
                if clients[index].endSent && clients[index].acceptedOn == clients[index].connection {
                    // Every frame is sent before call.end: the call ended without one it waited for.
                    if clients[index].unacked.contains(seq), ledger.events[EventKey(callID: clients[index].callID, seq: seq)] == nil,
                       !endedBySilence.contains(clients[index].callID) {
                        throw violation("a call ends only when its frames are settled", "\(clients[index].callID): seq \(seq), sent before call.end, was refused after it and is not stored")
                    }
                    clients[index].unacked.remove(seq)
                } else {
                    sendCallStartAgain(index)
                }
            default: clients[index].unacked.remove(seq)  // refused for good
            }
        case .budgetCutoff: clients[index].cutOff = true
        case .budgetWarning: break
        case .callSummary(let callID, let cost, _, _, _, _):
            let stored = ledger.cost(of: callID)
            guard cost == stored else { throw violation("a summary equals its call's events", "\(callID): summary \(cost), ledger \(stored)") }
            // Every frame was sent before call.end, and the summary follows their commit: acks
            // (and refusals for good) covered each one, or the sender would wait for them forever.
            // (A call ended by silence ends with what was stored: its missing frames never came. A
            // sender that reused a seq for other content had the copy refused, not the seq settled.)
            guard clients[index].unacked.isEmpty || endedBySilence.contains(callID) || clients[index].reusedASeq else {
                throw violation("a summarized call's frames are all acknowledged or refused", "\(callID): seqs \(clients[index].unacked.sorted()) unsettled")
            }
            clients[index].summary = cost
            clients[index].state = .done
            stats.callsSummarized += 1
            if let id = clients[index].connection { close(id) }
        }
    }

    private mutating func sendCallStartAgain(_ index: Int) {
        guard let id = clients[index].connection, clients[index].state != .done else { return }
        let client = clients[index]
        connections[id]?.toServer.append(.callStart(CallStart(callID: client.callID, userID: client.userID, startedAt: client.startedAt),
                                                    from: ClientConnection(id)))
    }

    // MARK: Invariants

    private func violation(_ invariant: String, _ detail: String) -> InvariantViolation {
        InvariantViolation(seed: options.seed, step: step, invariant: invariant, detail: detail, steps: options.steps)
    }

    /// An ack for n: every seq ≤ n of the call is stored, or was refused for good.
    private func checkAcknowledged(_ callID: String, through seq: Int64) throws {
        guard seq >= 1 else { return }
        for covered in 1...seq where ledger.events[EventKey(callID: callID, seq: covered)] == nil && ledger.refused[callID]?[covered] == nil {
            throw violation("no acknowledged frame is missing from the ledger", "\(callID): ack \(seq) covers seq \(covered), which is not stored")
        }
    }

    private mutating func checkInvariants() throws {
        if let key = ledger.eventsOfRejectedCalls.first {
            throw violation("no admission is bypassed", "\(key) was stored for a call refused at admission")
        }
        if let (key, _) = ledger.events.first(where: { $0.value.afterEnd }) {
            throw violation("an ended call stays ended", "\(key) was stored after its call ended (\(String(describing: ledger.calls[key.callID])))")
        }
        // Every fifth step: a doubled spend stays doubled, and summing the ledger is the costly check.
        if step % 5 == 0 {
            try checkCallSpendIsBounded()
            try checkUserBudgetsHold()
            try checkGrantsAreHeld()
        }
        for (index, node) in nodes.enumerated() {
            for call in node.core.audit() where (call.phase == "active" || call.phase == "closing") && call.policy.autoCutoff && call.cutoff == nil {
                for (scope, spent) in [(BudgetScope.call, call.spent.call), (.day, call.spent.day), (.month, call.spent.month)] {
                    guard let limit = call.policy.limit(for: scope), limit > .zero ? spent >= limit : spent > .zero else { continue }
                    throw violation("a call over a limit with auto-cutoff is cut off",
                                    "node \(index): \(call.callID) of \(call.userID) has \(scope.rawValue) spend \(spent) at its \(limit) limit and no cutoff")
                }
            }
        }
    }

    /// After the run settles: every summary still equals its call's events (nothing was stored after it).
    private static func callID(of message: ServerMessage) -> String? {
        switch message {
        case .callAccepted(let id, _, _, _), .callRejected(let id, _, _, _), .ack(let id, _), .budgetWarning(let id, _, _, _, _),
             .budgetCutoff(let id, _, _, _), .callSummary(let id, _, _, _, _, _): id
        case .error(let error): error.callID
        }
    }

    /// A copy of a call never counts more spend than its frames stored or on their way to the
    /// ledger (a frame counted twice would cut a call off early).
    private func checkCallSpendIsBounded() throws {
        let audits = nodes.map { $0.core.audit().filter { $0.spent.call > .zero } }
        guard audits.contains(where: { !$0.isEmpty }) else { return }
        var bound: [String: ExactDecimal] = [:]
        func add(_ cost: ExactDecimal, to callID: String) { bound[callID] = (try? bound[callID, default: .zero].adding(cost)) ?? cost }
        for (key, event) in ledger.events { if let cost = event.cost { add(cost, to: key.callID) } }
        for node in nodes {
            for case .event(let event) in node.writerQueue {
                if case .priced(let priced) = event.pricing { add(priced.totalCost, to: event.key.callID) }
            }
        }
        for (index, calls) in audits.enumerated() {
            for call in calls where call.spent.call > bound[call.callID, default: .zero] {
                throw violation("a call's spend counts each frame once",
                                "node \(index): \(call.callID) counts \(call.spent.call), its frames stored and on their way cost \(bound[call.callID, default: .zero])")
            }
        }
    }

    /// What a user's frames on their way to the ledger (in the nodes' writer queues) cost.
    private func queuedSpend(of userID: String) -> ExactDecimal {
        var total = ExactDecimal.zero
        for node in nodes {
            for case .event(let event) in node.writerQueue where event.userID == userID {
                if case .priced(let priced) = event.pricing { total = (try? total.adding(priced.totalCost)) ?? total }
            }
        }
        return total
    }

    private static func floorKey(_ userID: String, _ scope: BudgetScope, _ now: Timestamp) -> String {
        "\(userID) \(scope.rawValue) \(scope == .day ? now.startOfDay : now.startOfMonth)"
    }

    /// Raises the user's floors to what is committed, granted or on its way now.
    private mutating func raiseSpendFloors(of userID: String) {
        let spent = ledger.snapshot(userID, asOf: now)
        let promised = (try? ledger.held(by: userID, at: now).adding(queuedSpend(of: userID))) ?? .zero
        for (scope, committed) in [(BudgetScope.day, spent.daySpent), (.month, spent.monthSpent)] {
            let key = Self.floorKey(userID, scope, now)
            let floor = (try? committed.adding(promised)) ?? committed
            spendFloors[key] = max(spendFloors[key] ?? .zero, floor)
        }
    }

    /// Committed day and month spend never passes the limit (or the floor under it) by more than
    /// a window of frames per call live at once and a frame per node: N nodes never spend N
    /// budgets. Spend not held by grants (auto-cutoff off, no limit, or a node that has not yet
    /// seen the user's limits) raises the floor instead.
    private mutating func checkUserBudgetsHold() throws {
        let audits = nodes.map { (calls: Set($0.core.audit().map(\.userID)), grants: Set($0.core.grantAudit().map(\.userID))) }
        // Every core spends day and month budget of a user whose limits cut off through a grant.
        for (index, node) in nodes.enumerated() {
            for call in node.core.audit() where call.phase == "active" && call.policy.autoCutoff
                && (call.policy.dayLimit != nil || call.policy.monthLimit != nil) && !audits[index].grants.contains(call.userID) {
                throw violation("a user whose limits cut off spends through a grant", "node \(index): \(call.callID) of \(call.userID) is live without one")
            }
        }
        for user in (1...users).map({ "u\($0)" }) {
            let live = clients.count { $0.userID == user && $0.state == .active }
            liveCallsMax[user] = max(liveCallsMax[user] ?? 0, live)
            let policy = (ledger.settings[user] ?? BudgetSettings()).policy(over: settings.defaults)
            let heldByGrants = policy.autoCutoff && (policy.dayLimit != nil || policy.monthLimit != nil)
                && audits.allSatisfy { !$0.calls.contains(user) || $0.grants.contains(user) }
            guard heldByGrants else {
                raiseSpendFloors(of: user)
                continue
            }
            let spent = ledger.snapshot(user, asOf: now)
            let frames = clientWindow * (liveCallsMax[user] ?? 0) + nodes.count
            let allowance = (try? Self.frameCostMaximum.multiplied(by: ExactDecimal(frames))) ?? .zero
            for (scope, committed) in [(BudgetScope.day, spent.daySpent), (.month, spent.monthSpent)] {
                guard let limit = policy.limit(for: scope) else { continue }
                let bound = (try? max(limit, spendFloors[Self.floorKey(user, scope, now)] ?? .zero).adding(allowance)) ?? limit
                guard committed <= bound else {
                    throw violation("a user's day and month budget holds across nodes",
                                    "\(user) committed \(committed) in the \(scope.rawValue), limit \(limit), bound \(bound) (a window of frames for each of \(liveCallsMax[user] ?? 0) calls at once and one per node)")
                }
            }
        }
    }

    /// No grant is counted twice: while a core's lease lasts, the ledger holds at least what the
    /// core may still price plus its frames on their way.
    private func checkGrantsAreHeld() throws {
        for (index, node) in nodes.enumerated() {
            for grant in node.core.grantAudit() where now < grant.validUntil {
                let holder = "node\(index)/\(node.life)"
                let row = ledger.grants[grant.userID]?[holder]
                let stored = row.flatMap { $0.expiresAt > now ? $0.amount : nil } ?? .zero
                let covered = (try? grant.inFlight.adding(grant.available)) ?? grant.inFlight
                guard stored >= covered else {
                    throw violation("a core spends only what the ledger holds for it",
                                    "node \(index): \(grant.userID) may price \(grant.available) with \(grant.inFlight) on its way; the ledger holds \(stored) for it")
                }
            }
        }
    }

    private func checkAtRest() throws {
        for client in clients {
            guard let summary = client.summary else { continue }
            let stored = ledger.cost(of: client.callID)
            guard summary == stored else { throw violation("a summary equals its call's events", "\(client.callID): summary \(summary), ledger \(stored) at rest") }
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
