import Dispatch
import MeteringCore
import Synchronization
import VoiceMeterDomain
import VoiceMeterMetering
import VoiceMeterLedger
import VoiceMeterFinanceAPI
import VoiceMeterStore
import WebSocketTransport

/// The VoiceMeter protocol over the WebSocket listener: token checks at the upgrade, each
/// connection's `IngressSession` (message rate, decoding), messages to metering, refusals
/// answered, health endpoints. Runs on the service thread, so nothing here blocks.
final class IngressDelegate: WebSocketServerDelegate {
    private let tokens: TokenCache
    private let readiness: ReadinessMonitor
    private let shards: [MeteringShard]
    private let router: CallRouter
    private let writers: LedgerWriters
    private let finance: FinanceAPI
    private let metrics: ServerMetrics
    private let ingressLimits: IngressLimits
    /// Each open connection's protocol state; touched only on the service thread, so the lock is
    /// never contended.
    private let sessions = Mutex<[ConnectionID: IngressSession]>([:])
    /// Sends a message on a connection (an answer given here, without metering).
    private let reply: @Sendable (ServerMessage, ConnectionID) -> Void

    init(tokens: TokenCache, readiness: ReadinessMonitor, shards: [MeteringShard], router: CallRouter, writers: LedgerWriters, finance: FinanceAPI,
         metrics: ServerMetrics, ingressLimits: IngressLimits, reply: @escaping @Sendable (ServerMessage, ConnectionID) -> Void) {
        self.reply = reply
        self.ingressLimits = ingressLimits
        self.finance = finance
        self.metrics = metrics
        self.tokens = tokens
        self.readiness = readiness
        self.shards = shards
        self.router = router
        self.writers = writers
    }

    func authorize(_ request: UpgradeRequest) -> UpgradeDecision {
        guard let token = request.bearerToken else {
            return .refuse(status: 401, reason: "send Authorization: Bearer <ingest token> (create one with voicemeter tokens create NAME)")
        }
        switch tokens.kind(of: token) {
        case .ingest: return .accept
        case .finance: return .refuse(status: 403, reason: "a finance token cannot stream usage; use an ingest token")
        case nil: return .refuse(status: 401, reason: "unknown or revoked token")
        }
    }

    func connectionOpened(_ connection: ConnectionID, request: UpgradeRequest) {
        metrics.connections.increment()
        let session = IngressSession(limits: ingressLimits, nowNanoseconds: DispatchTime.now().uptimeNanoseconds)
        sessions.withLock { $0[connection] = session }
        if let token = request.bearerToken { tokens.connectionOpened(connection, token: token) }
    }

    /// A whole message (or one dropped for its size): decoded by the connection's session, then
    /// handed to metering or refused.
    func received(_ message: InboundMessage, from connection: ConnectionID) -> ReceiveDisposition {
        let action: IngressAction
        switch message {
        case .message(let bytes, let isBinary):
            let now = DispatchTime.now().uptimeNanoseconds
            guard let decided = sessions.withLock({ $0[connection]?.receive(bytes, isBinary: isBinary, nowNanoseconds: now) }) else {
                return .close(code: IngressSession.closeCodePolicyViolation, reason: "connection not open")
            }
            action = decided
        case .tooLarge(let receivedBytes, let limitBytes):
            action = .reply(IngressSession.tooLarge(receivedBytes: receivedBytes, limitBytes: limitBytes))
        }
        switch action {
        case .deliver(let message):
            return deliver(message, from: connection) ? .keepReading : .pauseReading
        case .reply(let error):
            refused(error, from: connection)
            return .keepReading
        case .close(let code, let reason):
            return .close(code: code, reason: reason)
        }
    }

    /// A message the protocol refused. A frame refused for now is answered at once and expected
    /// again; a usage frame refused for good is answered by metering, which knows its call:
    /// settled there when the connection carries the call, else `unknown_call`.
    private func refused(_ error: ProtocolError, from connection: ConnectionID) {
        metrics.rejected(error.code)
        if let callID = error.callID, let seq = error.seq {
            let shard = shards[router.shard(forCall: callID)]
            if error.code == .rateLimited {
                shard.perform { $0.refusedTransiently(callID: callID, seq: seq, from: connection) }
            } else if RejectedFrameReason(decoding: error.code) != nil {
                return shard.perform { $0.refusedAtDecoding(error, from: connection) }
            }
        }
        reply(.error(error), connection)
    }

    /// Hands the message to metering; `false` (stop reading the socket) while the call's ledger
    /// writer is past its high watermark (writers resume all paused connections as they drain).
    private func deliver(_ message: ClientMessage, from connection: ConnectionID) -> Bool {
        // A scoped token opens and resumes calls only for its users (usage follows the call.start).
        if case .callStart(let start) = message, !tokens.connection(connection, mayActFor: start.userID) {
            reply(.callRejected(callID: start.callID, reason: "user_not_in_token_scope", spent: nil, limit: nil), connection)
            return true
        }
        let writer = writers.writer(for: message.callID)
        if case .usage = message {
            writer.noteIncoming()
            metrics.framesReceived.increment()
        }
        shards[router.shard(for: message)].perform { $0.handle(message, from: connection, writer: writer) }
        return !writer.isAboveHighWatermark
    }

    func connectionClosed(_ connection: ConnectionID) {
        metrics.connections.decrement()
        sessions.withLock { $0[connection] = nil }
        tokens.connectionClosed(connection)
        for shard in shards { shard.perform { $0.connectionClosed(connection) } }
    }

    func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void) {
        guard request.method == "GET" else {
            return reply(HTTPResponse(status: 405, body: #"{"error":"method_not_allowed","message":"only GET is served here"}"# + "\n",
                                      headers: [HTTPHeader("Allow", "GET")]))
        }
        if request.path.hasPrefix("/v1/calls/") || request.path.hasPrefix("/v1/users/") || request.path.hasPrefix("/v1/finance/")
            || request.path == "/dashboard" {
            finance.respond(to: request, reply: reply)
            return
        }
        reply(health(request))
    }

    private func health(_ request: HTTPRequest) -> HTTPResponse {
        switch request.path {
        case "/healthz":
            return HTTPResponse(status: 200, body: #"{"status":"ok"}"# + "\n")
        case "/metrics":
            return HTTPResponse(status: 200, contentType: "text/plain; version=0.0.4", body: MetricsExport.render())
        case "/readyz":
            var reason = readiness.current
            // Reachable is not enough: a writer that cannot commit (read-only, demoted) is not ready.
            if reason == .ok, writers.isInOutage { reason = .ledgerCannotCommit }
            return HTTPResponse(status: reason == .ok ? 200 : 503,
                                body: #"{"status":"\#(reason == .ok ? "ready" : "not_ready")","reason":"\#(reason.rawValue)"}"# + "\n")
        case "/v1/stream":
            return HTTPResponse(status: 426, body: #"{"error":"upgrade_required","message":"connect with a WebSocket client, subprotocol voicemeter.v1"}"# + "\n")
        default:
            return HTTPResponse(status: 404, body: #"{"error":"not_found","message":"endpoints: /v1/stream (WebSocket), /healthz, /readyz, /metrics, /v1/calls/{id}/costs, /v1/users/{id}/spend, /v1/finance/margins, /v1/finance/months (docs/openapi.yaml)"}"# + "\n")
        }
    }
}
