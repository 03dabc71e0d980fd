import Foundation
import Synchronization
import VoiceMeterDomain
import VoiceMeterTestSupport
import WebSocketTransport

/// A delegate that accepts the token "good-token", answers every usage frame with an ack and a
/// message too large with `frame_too_large`, closes a connection that sends `close-me` with 4000,
/// and serves /healthz.
final class AckingDelegate: WebSocketServerDelegate {
    let server = Mutex<WebSocketServer?>(nil)
    let opened = Atomic<Int>(0)
    let closed = Atomic<Int>(0)

    func authorize(_ request: UpgradeRequest) -> UpgradeDecision {
        request.bearerToken == "good-token" ? .accept : .refuse(status: 401, reason: "missing, unknown or revoked token")
    }

    /// The tokens connections were opened with, in order.
    let openedWith = Mutex<[String?]>([])

    func connectionOpened(_ connection: ConnectionID, request: UpgradeRequest) {
        opened.add(1, ordering: .relaxed)
        openedWith.withLock { $0.append(request.bearerToken) }
    }
    func connectionClosed(_ connection: ConnectionID) { closed.add(1, ordering: .relaxed) }

    func received(_ message: InboundMessage, from connection: ConnectionID, at _: UInt64) -> ReceiveDisposition {
        switch message {
        case .message(let bytes, _):
            if bytes == Array("close-me".utf8) { return .close(code: 4000, reason: "asked to") }
            if case .success(.usage(let frame)) = ClientMessageDecoder.decode(bytes) { send(.ack(callID: frame.callID, seq: frame.seq), to: connection) }
        case .tooLarge(let received, let limit):
            send(.error(IngressSession.tooLarge(receivedBytes: received, limitBytes: limit)), to: connection)
        }
        return .keepReading
    }

    private func send(_ message: ServerMessage, to connection: ConnectionID) {
        server.withLock { $0?.send(Array(message.json.utf8), to: connection) }
    }

    func respond(to request: HTTPRequest, reply: @escaping @Sendable (HTTPResponse) -> Void) {
        reply(request.path == "/healthz" ? HTTPResponse(status: 200, body: #"{"status":"ok"}"#) : HTTPResponse(status: 404, body: #"{"error":"not_found"}"#))
    }

    static func start(_ configure: (inout WebSocketServerConfiguration) -> Void = { _ in }) throws -> (WebSocketServer, AckingDelegate) {
        var configuration = WebSocketServerConfiguration()
        configuration.port = 0
        configure(&configuration)
        let delegate = AckingDelegate()
        let server = WebSocketServer(configuration: configuration)
        delegate.server.withLock { $0 = server }
        try server.start(delegate: delegate)
        return (server, delegate)
    }
}

/// An acking loopback server, a recording client and one connection from it, for tests that
/// stream on a single connection.
struct AckingSession {
    let server: WebSocketServer
    let delegate: AckingDelegate
    let recorder = ClientRecorder()
    let client: WebSocketClient
    let connection: ClientConnectionID

    init(_ configure: (inout WebSocketServerConfiguration) -> Void = { _ in }) throws {
        (server, delegate) = try AckingDelegate.start(configure)
        let recorder = recorder
        client = try WebSocketClient { recorder.record($0, $1) }
        connection = client.connect(to: ClientEndpoint(host: "127.0.0.1", port: server.port, bearerToken: "good-token"))
    }

    func send(_ text: String) { client.send(text, on: connection) }

    /// What the connection has received so far, in order.
    var messages: [String] { recorder.messages(of: connection) }

    /// Whether at least `count` messages arrive within the recorder's wait.
    func waitForMessages(_ count: Int) -> Bool { recorder.wait { messages.count >= count } }

    func shutdown() {
        client.shutdown()
        server.shutdown()
    }
}

func usageFrame(call: String = "CA1", seq: Int, padding: Int = 0) -> String {
    let metadata = padding > 0 ? #","metadata":{"pad":"\#(String(repeating: "x", count: padding))"}"# : ""
    return #"{"type":"usage","call_id":"\#(call)","seq":\#(seq),"ts":"2026-11-22T18:00:30Z","service":"twilio","operation":"voice_outbound","amount":"30","unit":"seconds"\#(metadata)}"#
}

