import Foundation
import Synchronization
import VoiceMeterDomain
import WebSocketTransport

/// Where a stream connects: host, port, path, subprotocol, ingest token, TLS.
public typealias VoiceMeterEndpoint = ClientEndpoint

/// A client of the VoiceMeter usage stream (protocol v1) for voice pipelines written in Swift.
///
/// One client runs one libwebsockets service thread and carries any number of streams; each
/// stream is one logical connection that reconnects by itself and resends what was not yet
/// acknowledged, so nothing is lost and (the server deduplicates by `(call_id, seq)`) nothing is
/// counted twice.
public final class VoiceMeterClient: Sendable {
    private let transport: WebSocketClient
    private let router: StreamRouter

    /// - Parameters:
    ///   - certificateAuthorityPath: PEM file of the CA that signs the server's certificate (`wss://`).
    ///   Many connections need a matching open-file limit (`setOpenFileLimit(forConnections:)`).
    public init(certificateAuthorityPath: String? = nil) throws {
        let router = StreamRouter()
        self.router = router
        transport = try WebSocketClient(certificateAuthorityPath: certificateAuthorityPath) {
            router.route($1, from: $0)
        }
    }

    /// Opens a stream to `endpoint`; it connects at once and whenever its connection drops.
    /// - Parameter onEvent: called on the client's service thread for everything that happens on
    ///   the stream; it must return quickly (it may call the stream's methods).
    public func openStream(to endpoint: VoiceMeterEndpoint, onEvent: @escaping @Sendable (VoiceMeterEvent) -> Void) -> VoiceMeterStream {
        let stream = VoiceMeterStream(endpoint: endpoint, transport: transport, router: router, onEvent: onEvent)
        stream.connect()
        return stream
    }

    /// Drops every connection and stops the service thread.
    public func shutdown() {
        router.removeAll()
        transport.shutdown()
    }
}

/// What happens on a stream, delivered on the client's service thread.
public enum VoiceMeterEvent: Sendable {
    /// The stream is connected; `resent` messages (call starts, unacknowledged frames, call ends)
    /// were sent on the new connection.
    case connected(resent: Int)
    /// The connection ended; unless the stream was closed it reconnects after `retryIn`.
    case disconnected(reason: String, retryIn: Duration?)
    /// A message from the server.
    case message(ServerMessage)
    /// An ack made frames of a call durable: how long each waited from `send` to its ack.
    case acknowledged(callID: String, throughSeq: Int64, latencies: [Duration])
    /// The server sent text that is not a v1 message (a newer server, or a defect).
    case unreadable(String)
}

/// A misuse of a stream, caught before anything is sent.
public enum VoiceMeterClientError: Error, Equatable, CustomStringConvertible {
    case callNotStarted(String)
    case callAlreadyStarted(String)
    case callAlreadyEnded(String)

    public var description: String {
        switch self {
        case .callNotStarted(let id): "call \(id) was not started on this stream; call start(_:) first"
        case .callAlreadyStarted(let id): "call \(id) is already started on this stream"
        case .callAlreadyEnded(let id): "call \(id) has ended; usage after call.end is not taken"
        }
    }
}

/// Sends each transport event to the stream that owns the connection.
final class StreamRouter: Sendable {
    private let streams = Mutex<[ClientConnectionID: VoiceMeterStream]>([:])

    /// Starts a connection and assigns it to `stream` before the service thread can report on it.
    func connect(_ stream: VoiceMeterStream, _ start: () -> ClientConnectionID) -> ClientConnectionID {
        streams.withLock { streams in
            let connection = start()
            streams[connection] = stream
            return connection
        }
    }

    func release(_ connection: ClientConnectionID) { streams.withLock { $0[connection] = nil } }
    func removeAll() { streams.withLock { $0.removeAll() } }

    func route(_ event: ClientEvent, from connection: ClientConnectionID) {
        streams.withLock { $0[connection] }?.handle(event, on: connection)
    }
}
