import DequeModule
import Dispatch
import OrderedCollections
import Synchronization
import VoiceMeterDomain
import WebSocketTransport

/// One logical connection to the server carrying any number of calls.
///
/// Messages are kept until the server has settled them: a call's `call.start` until the call is
/// over, each usage frame until an ack covers it, `call.end` until the summary arrives. While the
/// stream is disconnected they wait; on every (re)connection they are all sent again in order, so a
/// call continues on the new connection (or another server node) exactly where it was.
public final class VoiceMeterStream: Sendable {
    private let endpoint: VoiceMeterEndpoint
    private let transport: WebSocketClient
    private let router: StreamRouter
    private let onEvent: @Sendable (VoiceMeterEvent) -> Void
    private let state = Mutex(State())

    /// The first reconnect waits this long; each failed attempt doubles it up to `reconnectDelayMax`.
    static let reconnectDelayMin = Duration.milliseconds(100)
    static let reconnectDelayMax = Duration.seconds(5)
    /// A call refused as `overloaded` is sent again after this long.
    static let overloadedRetryDelay = Duration.milliseconds(500)

    struct PendingFrame {
        var seq: Int64
        var json: String
        var sentAt: ContinuousClock.Instant
    }

    struct CallState {
        var startJSON: String
        var nextSeq: Int64 = 1
        var unacknowledged: Deque<PendingFrame> = []
        var endJSON: String?
    }

    struct State {
        var connection: ClientConnectionID?
        var isConnected = false
        var isClosed = false
        var reconnectDelay = VoiceMeterStream.reconnectDelayMin
        /// Calls in the order they were started, so a reconnect resends starts in that order.
        var calls: OrderedDictionary<String, CallState> = [:]
        /// Calls with a resend scheduled after `overloaded` (one per call, however many errors).
        var retrying: Set<String> = []
    }

    init(endpoint: VoiceMeterEndpoint, transport: WebSocketClient, router: StreamRouter, onEvent: @escaping @Sendable (VoiceMeterEvent) -> Void) {
        self.endpoint = endpoint
        self.transport = transport
        self.router = router
        self.onEvent = onEvent
    }

    // MARK: Pipeline API

    /// Opens a call (`call.start`); the server answers `call.accepted` or `call.rejected`.
    public func start(_ call: CallStart) throws(VoiceMeterClientError) {
        try state.withLock { state throws(VoiceMeterClientError) in
            guard state.calls[call.callID] == nil else { throw .callAlreadyStarted(call.callID) }
            let json = ClientMessage.callStart(call).json
            state.calls[call.callID] = CallState(startJSON: json)
            transmit(json, state)
        }
    }

    /// Reports usage for a started call with the call's next `seq`, which it returns. The frame is
    /// kept until an ack covers it.
    @discardableResult
    public func send(callID: String, usage: MeteredUsage, externalID: String? = nil, metadataJSON: String? = nil) throws(VoiceMeterClientError) -> Int64 {
        try state.withLock { state throws(VoiceMeterClientError) in
            // Changed in place: a copy taken out would make every append copy the call's unacknowledged frames.
            guard let index = state.calls.index(forKey: callID) else { throw .callNotStarted(callID) }
            guard state.calls.values[index].endJSON == nil else { throw .callAlreadyEnded(callID) }
            let seq = state.calls.values[index].nextSeq
            state.calls.values[index].nextSeq += 1
            let json = ClientMessage.usage(UsageFrame(callID: callID, seq: seq, usage: usage, externalID: externalID, metadataJSON: metadataJSON)).json
            state.calls.values[index].unacknowledged.append(PendingFrame(seq: seq, json: json, sentAt: .now))
            transmit(json, state)
            return seq
        }
    }

    /// Ends a call (`call.end`); the server answers `call.summary` once all its usage is committed.
    public func end(callID: String, at endedAt: Timestamp? = nil) throws(VoiceMeterClientError) {
        try state.withLock { state throws(VoiceMeterClientError) in
            guard state.calls[callID] != nil else { throw .callNotStarted(callID) }
            guard state.calls[callID]!.endJSON == nil else { throw .callAlreadyEnded(callID) }
            let json = ClientMessage.callEnd(CallEnd(callID: callID, endedAt: endedAt)).json
            state.calls[callID]!.endJSON = json
            transmit(json, state)
        }
    }

    /// Sends text as it is, untracked: for resends made on purpose and for testing a server's
    /// answers to malformed input. Dropped while disconnected.
    public func sendRaw(_ text: String) {
        state.withLock { transmit(text, $0) }
    }

    /// Frames sent and not yet acknowledged, over all calls.
    public var unacknowledgedCount: Int {
        state.withLock { $0.calls.values.reduce(0) { $0 + $1.unacknowledged.count } }
    }

    /// Closes the current connection as a network failure would; the stream reconnects and resends.
    public func dropConnection() {
        if let connection = state.withLock({ $0.connection }) { transport.close(connection) }
    }

    /// Closes the stream for good after the queued messages; unsettled messages are abandoned.
    public func close() {
        let connection = state.withLock { state -> ClientConnectionID? in
            state.isClosed = true
            return state.connection
        }
        if let connection { transport.close(connection) }
    }

    // MARK: Connection

    func connect() {
        state.withLock { state in
            guard !state.isClosed else { return }
            state.connection = router.connect(self) { transport.connect(to: endpoint) }
        }
    }

    /// Sends now when connected; otherwise the message waits for the next connection's resend.
    private func transmit(_ json: String, _ state: State) {
        guard state.isConnected, let connection = state.connection else { return }
        transport.send(json, on: connection)
    }

    func handle(_ event: ClientEvent, on connection: ClientConnectionID) {
        var events: [VoiceMeterEvent] = []
        state.withLock { state in
            guard state.connection == connection else { return }
            switch event {
            case .connected:
                state.isConnected = true
                state.reconnectDelay = Self.reconnectDelayMin
                let messages = Self.unsettledMessages(state)
                for message in messages { transport.send(message, on: connection) }
                events.append(.connected(resent: messages.count))
            case .message(let text):
                guard let message = ServerMessage(json: text) else {
                    events.append(.unreadable(text))
                    return
                }
                if let acknowledged = settle(message, &state) { events.append(acknowledged) }
                events.append(.message(message))
            case .closeReceived:
                break
            case .disconnected, .connectFailed:
                router.release(connection)
                state.connection = nil
                state.isConnected = false
                let reason = if case .connectFailed(let why) = event { why } else { "connection closed" }
                guard !state.isClosed else {
                    events.append(.disconnected(reason: reason, retryIn: nil))
                    return
                }
                let delay = state.reconnectDelay
                state.reconnectDelay = min(delay * 2, Self.reconnectDelayMax)
                events.append(.disconnected(reason: reason, retryIn: delay))
                DispatchQueue.global().asyncAfter(deadline: .now() + delay / .seconds(1)) { [self] in connect() }
            }
        }
        for event in events { onEvent(event) }
    }

    /// Applies what a server message settles; returns the ack's latencies when it acknowledged frames.
    private func settle(_ message: ServerMessage, _ state: inout State) -> VoiceMeterEvent? {
        switch message {
        case .ack(let callID, let seq):
            guard let index = state.calls.index(forKey: callID) else { return nil }
            let now = ContinuousClock.Instant.now
            var latencies: [Duration] = []
            while let first = state.calls.values[index].unacknowledged.first, first.seq <= seq {
                latencies.append(now - first.sentAt)
                state.calls.values[index].unacknowledged.removeFirst()
            }
            return latencies.isEmpty ? nil : .acknowledged(callID: callID, throughSeq: seq, latencies: latencies)
        case .callSummary(let callID, _, _, _, _, _), .callRejected(let callID, _, _, _):
            state.calls[callID] = nil
        case .error(let error) where error.code == .overloaded:
            if let callID = error.callID, state.calls[callID] != nil, state.retrying.insert(callID).inserted { retryLater(callID) }
        case .callAccepted, .budgetWarning, .budgetCutoff, .error:
            break
        }
        return nil
    }

    /// Sends a call's start and unacknowledged frames again after the server said it was overloaded.
    private func retryLater(_ callID: String) {
        DispatchQueue.global().asyncAfter(deadline: .now() + Self.overloadedRetryDelay / .seconds(1)) { [self] in
            state.withLock { state in
                state.retrying.remove(callID)
                guard let call = state.calls[callID] else { return }
                for message in Self.messages(of: call) { transmit(message, state) }
            }
        }
    }

    /// Everything not yet settled, call by call in start order: start, unacknowledged frames, end.
    static func unsettledMessages(_ state: State) -> [String] {
        state.calls.values.flatMap(messages(of:))
    }

    static func messages(of call: CallState) -> [String] {
        [call.startJSON] + call.unacknowledged.map(\.json) + (call.endJSON.map { [$0] } ?? [])
    }
}
