// VoiceMeterIngress: the VoiceMeter protocol over the listener's bytes. It checks bearer tokens
// at the upgrade (TokenCache), runs each connection's IngressSession (message rate, decoding),
// hands decoded messages to metering with the ledger writer of their call, counts them for
// flow control, answers refusals, and encodes server messages for the listener. It decides
// nothing about money (metering does) and touches no database but the token table.

import Dispatch
import MeteringCore
import Synchronization
import VoiceMeterDomain
import VoiceMeterLedger
import VoiceMeterMetering
import WebSocketTransport

/// The listener's delegate: upgrades, streamed messages, and plain HTTP handed to `http`. Runs on
/// the service thread, so nothing here blocks.
package final class Ingress: WebSocketServerDelegate {
    private let tokens: TokenCache
    private let metering: MeteringShards
    private let writers: LedgerWriters
    private let backpressure: IngressBackpressure
    private let metrics: ServerMetrics
    private let limits: IngressLimits
    /// Each open connection's protocol state; touched only on the service thread, so the lock is
    /// never contended.
    private let sessions = Mutex<[ConnectionID: IngressSession]>([:])
    /// The way back to clients, for answers given here without metering.
    private let clients: WebSocketServer
    private let http: @Sendable (HTTPRequest, @escaping @Sendable (HTTPResponse) -> Void) -> Void

    /// - Parameter http: answers a plain HTTP request on the listener (by calling its reply once).
    package init(tokens: TokenCache, metering: MeteringShards, writers: LedgerWriters, backpressure: IngressBackpressure, metrics: ServerMetrics,
                 limits: IngressLimits, clients: WebSocketServer,
                 http: @escaping @Sendable (HTTPRequest, @escaping @Sendable (HTTPResponse) -> Void) -> Void) {
        self.tokens = tokens
        self.metering = metering
        self.writers = writers
        self.backpressure = backpressure
        self.metrics = metrics
        self.limits = limits
        self.clients = clients
        self.http = http
    }

    package func authorize(_ request: UpgradeRequest) -> UpgradeDecision {
        guard let token = request.bearerToken else {
            return .refuse(status: 401, reason: "send Authorization: Bearer <ingest token> (create one with voicemeter tokens create NAME)")
        }
        switch tokens.kind(of: token) {
        case .ingest: return .accept
        case .finance: return .refuse(status: 403, reason: "a finance token cannot stream usage; use an ingest token")
        case nil: return .refuse(status: 401, reason: "unknown or revoked token")
        }
    }

    package func connectionOpened(_ connection: ConnectionID, request: UpgradeRequest) {
        metrics.connections.increment()
        let session = IngressSession(limits: limits, nowNanoseconds: DispatchTime.now().uptimeNanoseconds)
        sessions.withLock { $0[connection] = session }
        if let token = request.bearerToken { tokens.connectionOpened(connection, token: token) }
    }

    /// A whole message (or one dropped for its size): decoded by the connection's session, then
    /// handed to metering or refused.
    package func received(_ message: InboundMessage, from connection: ConnectionID, at now: UInt64) -> ReceiveDisposition {
        let action: IngressAction
        switch message {
        case .message(let bytes, let isBinary):
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
            if error.code == .rateLimited {
                metering.refusedTransiently(callID: callID, seq: seq, from: connection)
            } else if RejectedFrameReason(decoding: error.code) != nil {
                return metering.refusedAtDecoding(error, callID: callID, from: connection)
            }
        }
        clients.send(.error(error), to: connection)
    }

    /// Hands the message to metering; `false` (stop reading the socket) while the call's ledger
    /// writer is past its high watermark (`IngressBackpressure`).
    private func deliver(_ message: ClientMessage, from connection: ConnectionID) -> Bool {
        // A scoped token opens and resumes calls only for its users (usage follows the call.start).
        if case .callStart(let start) = message, !tokens.connection(connection, mayActFor: start.userID) {
            clients.send(.callRejected(callID: start.callID, reason: "user_not_in_token_scope", spent: nil, limit: nil), to: connection)
            return true
        }
        let writer = writers.writer(for: message.callID)
        let mayReadOn: Bool
        if case .usage = message {
            mayReadOn = backpressure.frameRead(for: writer)
            metrics.framesReceived.increment()
        } else {
            mayReadOn = backpressure.hasRoom(for: writer)
        }
        metering.handle(message, from: connection, writer: writer)
        return mayReadOn
    }

    package func connectionClosed(_ connection: ConnectionID) {
        metrics.connections.decrement()
        sessions.withLock { $0[connection] = nil }
        tokens.connectionClosed(connection)
        metering.connectionClosed(connection)
    }

    package func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void) {
        http(request, reply)
    }
}
