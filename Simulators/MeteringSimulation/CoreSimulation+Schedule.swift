import MeteringCore
import VoiceMeterDomain

/// The seeded schedule: each step starts a call, sends, resends or ends frames, delivers a message,
/// commits, answers a registration or grant, drops or restores a connection, crashes a node,
/// changes limits, or lets time pass.
extension CoreSimulation {
    mutating func takeStep() throws {
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

    var faultsAllowed: Bool { !settling }

    mutating func startCall() {
        // A call id is reused (the last client's is the first's) only once the call it named is over.
        let live = Set(clients.filter { $0.state == .starting || $0.state == .active }.map(\.callID))
        guard let index = clients.indices.filter({ clients[$0].state == .idle && !live.contains(clients[$0].callID) }).randomElement(using: &random)
        else { return }
        clients[index].startedAt = now
        clients[index].state = .starting
        openConnection(for: index)
    }

    /// Opens a connection to a random node and sends the call's start, its unacknowledged frames in seq order, and its end if it was sent.
    mutating func openConnection(for index: Int) {
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

    func usage(of index: Int, seq: Int64, connection: Int) -> MeteringInput {
        let client = clients[index]
        let frame = client.frames[seq]!
        return .usage(UsageFrame(callID: client.callID, seq: seq, usage: frame.usage),
                      hash: Self.hash(client.callID, seq, frame.variant), from: ClientConnection(connection))
    }

    /// A new frame of a call not ended nor cut off, while fewer than `clientWindow` wait for their ack.
    mutating func sendFrame() {
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

    mutating func resendUnacknowledged() {
        guard let index = clients.indices.filter({ clients[$0].connection != nil && !clients[$0].unacked.isEmpty && clients[$0].state != .done })
            .randomElement(using: &random), let seq = clients[index].unacked.sorted().randomElement(using: &random)
        else { return }
        let connection = clients[index].connection!
        let message = usage(of: index, seq: seq, connection: connection)
        connections[connection]?.toServer.append(message)
    }

    /// A pipeline bug: the same seq sent again with other content.
    mutating func sendConflictingFrame() {
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
    mutating func intrude() {
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

    mutating func endCall() {
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

    mutating func deliverToServer() throws {
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

    mutating func deliverToClient() throws {
        guard let id = connections.keys.sorted().filter({ !connections[$0]!.toClient.isEmpty }).randomElement(using: &random) else { return }
        let message = connections[id]!.toClient.removeFirst()
        try receive(message, client: connections[id]!.client)
    }

    mutating func flushWriter() throws {
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

    mutating func completeRegistration() throws {
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
    mutating func completeGrant() throws {
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

    mutating func completeRefresh() throws {
        guard let index = nodes.indices.filter({ !nodes[$0].refreshes.isEmpty }).randomElement(using: &random) else { return }
        let pending = nodes[index].refreshes.removeFirst()
        var snapshots: [String: UserBudgetSnapshot] = [:]
        for user in pending.users { snapshots[user] = ledger.snapshot(user, asOf: pending.asOf) }
        try feed(index, .budgetsRefreshed(snapshots, asOf: pending.asOf))
    }

    mutating func dropConnection() {
        guard faultsAllowed, let id = connections.keys.sorted().randomElement(using: &random) else { return }
        close(id)
    }

    mutating func close(_ id: Int) {
        guard let connection = connections.removeValue(forKey: id) else { return }
        if clients[connection.client].connection == id { clients[connection.client].connection = nil }
        try? feed(connection.node, .connectionClosed(ClientConnection(id)))
    }

    mutating func reconnect() throws {
        guard let index = clients.indices.filter({ [.starting, .active].contains(clients[$0].state) && clients[$0].connection == nil })
            .randomElement(using: &random)
        else { return }
        stats.reconnects += 1
        openConnection(for: index)
    }

    /// A node dies and restarts empty: its writer queue, pending work and connections are gone.
    mutating func crashNode() {
        guard faultsAllowed else { return }
        let index = random.below(nodes.count)
        trace?("step \(step) node \(index) crashes")
        stats.crashes += 1
        for id in connections.keys.sorted().filter({ connections[$0]!.node == index }) {
            if let client = connections.removeValue(forKey: id)?.client, clients[client].connection == id { clients[client].connection = nil }
        }
        nodes[index] = Node(core: MeteringCore(settings: settings), life: nodes[index].life + 1, nextTick: now.adding(seconds: 30))
    }

    mutating func changeLimits() throws {
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

    mutating func runTicks() throws {
        for index in nodes.indices where nodes[index].nextTick <= now {
            nodes[index].nextTick = now.adding(seconds: 30)
            try feed(index, .tick)
        }
    }
}
